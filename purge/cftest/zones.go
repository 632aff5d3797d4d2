package cftest

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/purgeq/purgeq/purge"
)

// zoneList is Cloudflare's answer to GET /zones, with the fields of a zone
// that the simulator knows.
type zoneList struct {
	Success    bool             `json:"success"`
	Errors     []purge.APIError `json:"errors"`
	Messages   []purge.APIError `json:"messages"`
	Result     []zoneEntry      `json:"result"`
	ResultInfo resultInfo       `json:"result_info"`
}

type zoneEntry struct {
	ID      string     `json:"id"`
	Name    string     `json:"name"`
	Status  string     `json:"status"`
	Account accountRef `json:"account"`
}

type accountRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type resultInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
	TotalPages int `json:"total_pages"`
}

// serveZones answers GET /client/v4/zones.
func (s *Server) serveZones(w http.ResponseWriter, r *http.Request) {
	token, _ := bearer(r)
	a, list := s.listZones(r, token)
	s.delay()
	if a.status != http.StatusOK {
		s.writeAnswer(w, token, a)
		return
	}
	s.setRateHeaders(w.Header(), token)
	purge.WriteJSON(w, http.StatusOK, list)
}

// listZones lists the zones of the token's accounts by name, one page
// (query page, from 1; per_page, 20 unless told, clamped to 5–50; name, to
// list only the zone of that name). A listing is an API call like any
// other: it takes a slot of the token's global window, or is answered 971
// when the window is full or blocked. Forced 429s and faults are for purge
// calls only.
func (s *Server) listZones(r *http.Request, token string) (answer, zoneList) {
	if r.Method != http.MethodGet {
		return answer{status: http.StatusNotFound, code: purge.CodeNoRouteMethod, message: "No route for that URI"}, zoneList{}
	}
	win := s.windows[token]
	if win == nil {
		return answer{status: http.StatusForbidden, code: purge.CodeAuth, message: "Authentication error"}, zoneList{}
	}
	s.mu.Lock()
	s.stats.ZoneLists++
	now := time.Now()
	a, blocked := s.blocked(win, now)
	if !blocked {
		a, _ = s.admit(win, now)
	}
	s.mu.Unlock()
	if a.status != 0 {
		return a, zoneList{}
	}

	q := r.URL.Query()
	zones := s.listed[token]
	if name := q.Get("name"); name != "" {
		zones = nil
		for _, z := range s.listed[token] {
			if strings.EqualFold(z.Name, name) {
				zones = append(zones, z)
			}
		}
	}
	page, perPage := queryInt(q, "page", 1, 1, maxPage), queryInt(q, "per_page", 20, 5, 50)
	lo := min((page-1)*perPage, len(zones))
	hi := min(lo+perPage, len(zones))
	return answer{status: http.StatusOK}, zoneList{Success: true, Errors: []purge.APIError{}, Messages: []purge.APIError{},
		Result: append([]zoneEntry{}, zones[lo:hi]...),
		ResultInfo: resultInfo{Page: page, PerPage: perPage, Count: hi - lo, TotalCount: len(zones),
			TotalPages: (len(zones) + perPage - 1) / perPage}}
}

// maxPage bounds the page number read, so that offsets cannot overflow.
const maxPage = 1 << 20

// queryInt reads an integer query parameter, def when absent or not a
// number, clamped to [lo, hi].
func queryInt(q url.Values, key string, def, lo, hi int) int {
	n, err := strconv.Atoi(q.Get(key))
	if err != nil {
		n = def
	}
	return max(lo, min(n, hi))
}
