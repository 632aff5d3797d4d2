module github.com/purgeq/purgeq

go 1.26.8
