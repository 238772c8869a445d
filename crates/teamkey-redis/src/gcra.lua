-- teamkey-redis: one GCRA check of one key, atomically (a script runs alone).
-- The arithmetic is governor's, as teamkey's LocalRateLimiter runs it, so
-- both decide alike while a key's quota holds.
--
-- KEYS[1]  the API key's state: "TAT QUOTA", its theoretical arrival time
--          (nanoseconds since the Unix epoch, in decimal) and the quota it
--          was counted under ("100/60s"). Absent or unreadable: the quota
--          is whole. Counted under another quota: the requests it still
--          counts (how far the TAT is ahead, over that quota's interval)
--          count under this one too. Instances that disagree on a key's
--          quota for a while (a plan change inside the policy TTL, a
--          rolling deploy of a new default) so never reset it for each
--          other: the key gets at most the larger quota, not a fresh one
--          at every switch.
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
-- {0, wait, whole} when refused (ns until one more is allowed, and until
-- the quota is whole again), and nothing is written: a refused request is
-- not counted.
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

-- How far the TAT is ahead of now, in this quota's terms; and the interval
-- of the quota it was counted under, at whose pace it goes on coming back
-- until this quota counts a request. Unreadable counts as absent.
local ahead, t_then = 0, t
local stored = redis.call('GET', KEYS[1])
local tat, counted_under
if stored then
  tat, counted_under = string.match(stored, '^(%d%d%d%d%d%d%d%d%d%d+) (.+)$')
end
if tat then
  local s = tonumber(string.sub(tat, 1, -10))
  local ns = tonumber(string.sub(tat, -9))
  ahead = (s - now_s) * 1e9 + (ns - now_ns)
  if counted_under ~= quota then
    -- Its interval as Gcra::new computes it: the window in ns over the
    -- requests, rounded down (exact: at most 8.64e13 over at least 1).
    local requests, window = string.match(counted_under, '^(%d+)/(%d+)s$')
    requests, window = tonumber(requests), tonumber(window)
    -- Within what a RateLimit can be (1 to 1e6 requests, 1 s to a day):
    -- anything else is no state this limiter wrote.
    if requests and window and requests >= 1 and requests <= 1000000
        and window >= 1 and window <= 86400 and ahead > 0 then
      t_then = math.max(math.floor(window * 1e9 / requests), 1)
      -- The requests still counted, as many of this quota's intervals;
      -- rounded to the nearest ns, as the product may not be exact.
      ahead = math.floor(ahead * t / t_then + 0.5)
    else
      ahead = 0
    end
  end
end

if ahead > tau then
  local wait, whole = ahead - tau, ahead
  if t_then ~= t then
    wait = math.max(math.floor(wait * t_then / t + 0.5), 1)
    whole = math.max(math.floor(ahead * t_then / t + 0.5), wait)
  end
  return {0, wait, whole}
end

local next = math.max(ahead, 0) + t
local at = now_ns + next
-- It expires when the quota is whole again: then it says nothing (kept
-- longer, it would say the same: a past TAT counts as now).
redis.call('SET', KEYS[1],
  string.format('%d%09d %s', now_s + math.floor(at / 1e9), at % 1e9, quota),
  'PX', math.max(math.ceil(next / 1e6), tonumber(ARGV[6])))
return {1, next}
