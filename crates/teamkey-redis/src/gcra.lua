-- teamkey-redis: one GCRA check of one key, atomically (a script runs alone).
-- The arithmetic is governor's, as teamkey's LocalRateLimiter runs it, so
-- both decide alike.
--
-- KEYS[1]  the API key's state: "TAT QUOTA", its theoretical arrival time
--          (nanoseconds since the Unix epoch, in decimal) and the quota it
--          was counted under ("100/60s"). Absent, or under another quota:
--          the quota is whole.
-- ARGV[1]  T, the emission interval: window / requests, in nanoseconds.
-- ARGV[2]  tau, the tolerance: T * (requests - 1), in nanoseconds.
-- ARGV[3]  the quota, as stored.
-- ARGV[4]  now, seconds since the epoch; with ARGV[5], its microseconds.
--          Both empty (always, outside tests): Redis's own TIME, one clock
--          for every instance.
-- ARGV[6]  the shortest life of a state, in milliseconds of Redis's time:
--          0, but for a test clock, which Redis's expiry does not follow.
--
-- Returns {1, TAT - now} (ns) when allowed, and the TAT moves on by T;
-- {0, wait} (ns until one more is allowed) when refused, and nothing is
-- written: a refused request is not counted.
--
-- Lua numbers are doubles, exact for integers up to 2^53 (104 days in ns):
-- absolute times are kept as seconds and nanoseconds apart, and only
-- differences, at most a day or so, are computed in one number.
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local quota = ARGV[3]
local now_s, now_us
if ARGV[4] == '' then
  local time = redis.call('TIME')
  now_s, now_us = tonumber(time[1]), tonumber(time[2])
else
  now_s, now_us = tonumber(ARGV[4]), tonumber(ARGV[5])
end
local now_ns = now_us * 1000

-- How far the TAT is ahead of now. Unreadable counts as absent.
local ahead = 0
local stored = redis.call('GET', KEYS[1])
local tat, counted_under
if stored then
  tat, counted_under = string.match(stored, '^(%d%d%d%d%d%d%d%d%d%d+) (.+)$')
end
if tat and counted_under == quota then
  local s = tonumber(string.sub(tat, 1, -10))
  local ns = tonumber(string.sub(tat, -9))
  ahead = (s - now_s) * 1e9 + (ns - now_ns)
end

if ahead > tau then
  return {0, ahead - tau}
end

local next = math.max(ahead, 0) + t
local at = now_ns + next
-- It expires when the quota is whole again: then it says nothing (kept
-- longer, it would say the same: a past TAT counts as now).
redis.call('SET', KEYS[1],
  string.format('%d%09d %s', now_s + math.floor(at / 1e9), at % 1e9, quota),
  'PX', math.max(math.ceil(next / 1e6), tonumber(ARGV[6])))
return {1, next}
