package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// chunkSize is how many --from items go in one staged chunk.
const chunkSize = 1000

// from is a validated --from input: its good items spooled to a temporary
// file, so that memory does not grow with the input, and its bad lines.
type from struct {
	kind  purge.Kind
	zone  string
	spool *os.File
	items int
	bad   []string
}

// readFrom validates every line (rules and zone) in chunks and spools the
// good ones. Blank lines and lines starting with # are skipped.
func readFrom(c *tasks.Client, path, kindName, zone string, stdin io.Reader) (*from, error) {
	kind, err := purge.ParseKind(kindName)
	if err != nil || kind == purge.Everything {
		return nil, usageError("--kind %q: want files, tags, hosts or prefixes", kindName)
	}
	r, name := stdin, "stdin"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, usageError("--from: %v", err)
		}
		defer f.Close()
		r, name = f, path
	}
	spool, err := os.CreateTemp("", "enqueue-from-*")
	if err != nil {
		return nil, err
	}
	os.Remove(spool.Name()) // gone when closed
	fr := &from{kind: kind, zone: zone, spool: spool}
	out := bufio.NewWriter(spool)

	var items []string
	var lines []int
	flush := func() error {
		if len(items) == 0 {
			return nil
		}
		_, err := c.Build(tasks.ItemsRequest(kind, zone, items))
		bad := map[string]string{}
		var ie *purge.InvalidError
		if errors.As(err, &ie) {
			for _, it := range ie.Items {
				bad[it.Item] = it.Reason
			}
		} else if err != nil {
			return err
		}
		for i, it := range items {
			if reason, ok := bad[it]; ok {
				fr.bad = append(fr.bad, fmt.Sprintf("%s:%d: %q: %s", name, lines[i], it, reason))
				continue
			}
			out.WriteString(it)
			out.WriteByte('\n')
			fr.items++
		}
		items, lines = items[:0], lines[:0]
		return nil
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		item := strings.TrimSpace(sc.Text())
		if item == "" || strings.HasPrefix(item, "#") {
			continue
		}
		items, lines = append(items, item), append(lines, line)
		if len(items) == chunkSize {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, usageError("--from %s: %v", name, err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if err := out.Flush(); err != nil {
		return nil, err
	}
	return fr, nil
}

// stage adds the spooled items to the stream in chunks.
func (fr *from) stage(ctx context.Context, st *tasks.Stream) error {
	defer fr.spool.Close()
	if _, err := fr.spool.Seek(0, io.SeekStart); err != nil {
		return err
	}
	sc := bufio.NewScanner(fr.spool)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	items := make([]string, 0, chunkSize)
	for sc.Scan() {
		items = append(items, sc.Text())
		if len(items) == chunkSize {
			if err := st.Add(ctx, tasks.ItemsRequest(fr.kind, fr.zone, items)); err != nil {
				return err
			}
			items = items[:0]
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(items) > 0 {
		return st.Add(ctx, tasks.ItemsRequest(fr.kind, fr.zone, items))
	}
	return nil
}
