package config

// Callbacks configures completion callbacks.
type Callbacks struct{}
