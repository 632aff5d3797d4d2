package purge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// Zone is a zone the API token can use, as GET /zones lists it.
type Zone struct {
	ID, Name string
	// Account is the name of the Cloudflare account that owns the zone.
	Account string
}

// zonesPerPage is the most zones Cloudflare lists in one answer.
const zonesPerPage = 50

// zonePage is one answer of GET /zones: the fields ListZones reads.
type zonePage struct {
	Success bool `json:"success"`
	Result  []struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		Account struct {
			Name string `json:"name"`
		} `json:"account"`
	} `json:"result"`
	ResultInfo struct {
		TotalPages int `json:"total_pages"`
	} `json:"result_info"`
}

// ListZones lists every zone the token can see (GET /zones, 50 a page,
// every page) in the API's order, a zone that moves between pages while
// they are read once, with the Ratelimit header of the last answer (nil when
// it had none). Each page is an API call that counts against the token's
// global window. A failure is a *Error, classified as a purge's is (a 429:
// RateLimited, Scope global, with RetryAfter); it returns no zones.
func (c *Client) ListZones(ctx context.Context) ([]Zone, *RateInfo, error) {
	var zones []Zone
	seen := make(map[string]bool)
	for page := 1; ; page++ {
		p, ri, err := c.zonePage(ctx, page)
		if err != nil {
			return nil, ri, err
		}
		for _, z := range p.Result {
			if !seen[z.ID] {
				seen[z.ID] = true
				zones = append(zones, Zone{ID: z.ID, Name: z.Name, Account: z.Account.Name})
			}
		}
		if len(p.Result) == 0 || page >= p.ResultInfo.TotalPages {
			return zones, ri, nil
		}
	}
}

// zonePage fetches one page of GET /zones.
func (c *Client) zonePage(ctx context.Context, page int) (zonePage, *RateInfo, error) {
	query := url.Values{"page": {strconv.Itoa(page)}, "per_page": {strconv.Itoa(zonesPerPage)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/zones?"+query.Encode(), nil)
	if err != nil {
		return zonePage{}, nil, &Error{Class: Misconfigured, Message: "building request: " + err.Error()}
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		return zonePage{}, nil, &Error{Class: Transient, Err: stripURL(err)}
	}
	defer resp.Body.Close()
	ri := rateOf(resp.Header)
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return zonePage{}, ri, &Error{Class: Transient, Status: resp.StatusCode, Rate: ri, Err: fmt.Errorf("reading response: %w", err)}
	}
	var p zonePage
	if resp.StatusCode >= 200 && resp.StatusCode < 300 && json.Unmarshal(data, &p) == nil && p.Success {
		return p, ri, nil
	}
	if _, err := Classify(resp.StatusCode, resp.Header, data, Batch{}); err != nil {
		return zonePage{}, ri, err
	}
	// A purge's success envelope, say: not a list of zones.
	return zonePage{}, ri, &Error{Class: Transient, Status: resp.StatusCode, Rate: ri, Err: errors.New("the answer to GET /zones is not a list of zones")}
}
