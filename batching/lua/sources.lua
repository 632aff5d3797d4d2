-- sources.lua reads one token of a source list: request id, item count,
-- and whether the items are covered by a purge-everything.
local function parseSource(tok)
  local rid, n = string.match(tok, '^(.-)~(%d+)$')
  if rid then return rid, tonumber(n), true end
  return tok, 1, false
end
