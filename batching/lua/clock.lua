-- clock.lua starts every script that needs the time: now (server ms) and
-- exact(), which writes numbers whole (Lua's tostring keeps 14 digits).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function exact(x) return string.format('%.0f', x) end
