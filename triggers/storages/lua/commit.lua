-- Write one transaction's changes, but only while the caller still holds the
-- session lock; then (optionally) release the lock the way python-redis-lock
-- does, waking one waiter. Every key it touches is in KEYS. The session's keys
-- share one hash slot; the session index shard (another slot) is updated here
-- only when the client names its keys, which a cluster client never does (it
-- sends touch_index.lua beside this script instead).
-- KEYS: 1 config, 2 index, 3 instances, 4 waiting, 5 counters, 6 kwargs, 7 meta,
--       8 received, 9 timers, 10 idempotency, 11 values (large received kwargs
--       by digest, stored once), 12 recent commits (the lock tokens of the last
--       commits, " tok1 tok2 ... ", at most 1 KB), 13 lock, 14 lock signal,
--       then the lease keys the operations name by position, then (when ARGV[6]
--       is not '') the session index shard's activity, names and expires keys
-- ARGV: token, signal expire ms, ttl ms (-1 persist, 0 leave), release (1/0),
--       now (Unix seconds), session uid to record in the index ('' none),
--       when its keys expire for the index (Unix seconds, '' never), then the
--       operations, one argument each:
--   H<key#> <field> <value>    HSET (H3: of KEYS[3]; consecutive ones of a
--                              key are one HSET)
--   D <key#> <field>           HDEL
--   N <key#> <field> <value>   HSETNX
--   Z <member>  ZADD waiting   R <member>  ZREM waiting
--   S <value>   SET meta       X <key#>    DEL
--   L <key#> <token> <ms>      set a lease  U <key#>  drop a lease
--   I <key> <expiry> <max>     record an idempotency key, drop expired ones and
--                              keep at most <max> (those expiring last)
-- Returns 0, or 1 when the lock is no longer ours (nothing written).
-- A client that lost the reply and sends the script again finds its token
-- among the recent commits and gets 0 without writing twice (the index was
-- updated by the first run: the update is a ZADD of the same scores anyway).
local COMMITS, LOCK, SIGNAL = 12, 13, 14
local token = ARGV[1]
local recent = nil
if token ~= '' then
  local got = redis.call('MGET', KEYS[COMMITS], KEYS[LOCK])
  recent = got[1]
  if recent and string.find(recent, ' ' .. token .. ' ', 1, true) then
    return 0
  end
  if got[2] ~= token then
    return 1
  end
end
-- How long every key of the session lives from now: ttl ms, or for ever (-1),
-- or as it was (0: a commit that writes nothing).
local ttl = tonumber(ARGV[3])
-- The keys a SET below gave that expiry already, with PX (or, ttl -1, took
-- theirs away): the expiry loop at the end skips them (a call less each).
local renewed = {}
local function set_renewing(k, value)
  if ttl > 0 then
    redis.call('SET', KEYS[k], value, 'PX', ttl)
  else
    redis.call('SET', KEYS[k], value)
  end
  renewed[k] = ttl ~= 0
end
-- The HSET operations' key numbers (the rest name theirs in an argument).
local HSET_KEY = {H1 = 1, H2 = 2, H3 = 3, H5 = 5, H6 = 6, H8 = 8, H9 = 9, H11 = 11}
local ops = ARGV
local i = 8
local n = #ops
-- waiting_changed: the waiting index's flag (see below) is to be written;
-- removed: a member left it, so it may be gone.
local waiting_changed, removed = false, false
while i <= n do
  local op = ops[i]
  local k = HSET_KEY[op]
  if k then
    if ops[i + 3] ~= op then
      if k == 5 and waiting_changed then
        -- The waiting index's flag (see below) goes with the counters: the
        -- operations change the waiting index before them.
        redis.call('HSET', KEYS[5], ops[i + 1], ops[i + 2], '\31w',
          (not removed or redis.call('EXISTS', KEYS[4]) == 1) and '1' or '0')
        waiting_changed = false
      else
        redis.call('HSET', KEYS[k], ops[i + 1], ops[i + 2])
      end
      i = i + 3
    else
      local args = {KEYS[k]}
      repeat
        args[#args + 1] = ops[i + 1]; args[#args + 1] = ops[i + 2]; i = i + 3
      until ops[i] ~= op or #args > 1000
      if k == 5 and waiting_changed then
        args[#args + 1] = '\31w'
        args[#args + 1] = (not removed or redis.call('EXISTS', KEYS[4]) == 1) and '1' or '0'
        waiting_changed = false
      end
      redis.call('HSET', unpack(args))
    end
  elseif op == 'Z' then
    redis.call('ZADD', KEYS[4], 0, ops[i + 1]); i = i + 2; waiting_changed = true
  elseif op == 'R' then
    redis.call('ZREM', KEYS[4], ops[i + 1]); i = i + 2; waiting_changed = true; removed = true
  elseif op == 'S' then
    set_renewing(7, ops[i + 1]); i = i + 2
  elseif op == 'N' then
    redis.call('HSETNX', KEYS[tonumber(ops[i + 1])], ops[i + 2], ops[i + 3]); i = i + 4
  elseif op == 'D' then
    redis.call('HDEL', KEYS[tonumber(ops[i + 1])], ops[i + 2]); i = i + 3
  elseif op == 'X' then
    redis.call('DEL', KEYS[tonumber(ops[i + 1])]); i = i + 2
  elseif op == 'L' then
    redis.call('SET', KEYS[tonumber(ops[i + 1])], ops[i + 2], 'PX', ops[i + 3]); i = i + 4
  elseif op == 'U' then
    redis.call('DEL', KEYS[tonumber(ops[i + 1])]); i = i + 2
  elseif op == 'I' then
    redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', ARGV[5])
    redis.call('ZADD', KEYS[10], ops[i + 2], ops[i + 1])
    -- At most <max> keys: those expiring first (lowest scores) go.
    local extra = redis.call('ZCARD', KEYS[10]) - tonumber(ops[i + 3])
    if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[10], 0, extra - 1) end
    i = i + 4
  else
    return redis.error_reply('triggers commit: unknown operation ' .. tostring(op))
  end
end
if waiting_changed then
  -- Whether the waiting index should exist (Redis deletes an empty one), kept
  -- beside the counters: a fire can then tell "empty" from "evicted". (Only
  -- a removal can leave it empty.)
  redis.call('HSET', KEYS[5], '\31w', (not removed or redis.call('EXISTS', KEYS[4]) == 1) and '1' or '0')
end
if token ~= '' and ARGV[3] ~= '0' then
  -- (A commit that writes nothing -- ttl '0' -- records no token: a resend
  -- could apply nothing twice, and the record would outlive the session.)
  local kept = ' ' .. token .. (recent or ' ')
  if #kept > 1024 then
    -- Cut after the first separator past 768 bytes (tokens are far shorter
    -- than 256 bytes): one plain find, and the record then grows for several
    -- commits before it is cut again.
    local at = string.find(kept, ' ', 769, true)
    if at > 1024 then at = string.find(kept, ' ', 2, true) end
    kept = string.sub(kept, 1, at)
  end
  set_renewing(COMMITS, kept)
end
-- Every key of the session expires ttl from now (or never, ttl -1).
if ttl ~= 0 then
  for k = 1, COMMITS do
    if not renewed[k] then
      if ttl > 0 then
        redis.call('PEXPIRE', KEYS[k], ttl)
      else
        redis.call('PERSIST', KEYS[k])
      end
    end
  end
end
if ARGV[6] ~= '' then
  -- The session index (see session_index.py and touch_index.lua). A uid is
  -- in the names set exactly when it is in the activity one (they are
  -- written and removed together): only a newly listed uid needs adding.
  local n = #KEYS
  if redis.call('ZADD', KEYS[n - 2], ARGV[5], ARGV[6]) == 1 then
    redis.call('ZADD', KEYS[n - 1], 0, ARGV[6])
  end
  if ARGV[7] == '' then
    redis.call('ZREM', KEYS[n], ARGV[6])
  else
    redis.call('ZADD', KEYS[n], ARGV[7], ARGV[6])
  end
end
if ARGV[4] == '1' then
  -- python-redis-lock's release: a signal list of one element, expiring, for
  -- a waiter's BLPOP (and no lock). The script is atomic, so one DEL of both
  -- keys is the same as its DEL, LPUSH, PEXPIRE, DEL.
  redis.call('DEL', KEYS[SIGNAL], KEYS[LOCK])
  redis.call('LPUSH', KEYS[SIGNAL], 1)
  redis.call('PEXPIRE', KEYS[SIGNAL], ARGV[2])
end
return 0
