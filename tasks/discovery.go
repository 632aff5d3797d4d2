package tasks

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/keyspace"
)

// WantZones asks the workers that list their zones through the API to
// list them again soon: a producer met host, which matches no known zone.
func WantZones(ctx context.Context, rdb redis.Cmdable, host string) error {
	return rdb.Set(ctx, keyspace.ZonesWanted, host, time.Hour).Err()
}

// ZonesWanted reports, once, whether a producer asked for a new listing.
func ZonesWanted(ctx context.Context, rdb redis.Cmdable) (bool, error) {
	err := rdb.GetDel(ctx, keyspace.ZonesWanted).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	return err == nil, err
}
