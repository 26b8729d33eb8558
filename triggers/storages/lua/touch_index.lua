-- Record that a session was written, in its shard of the session index
-- (see session_index.py): one command and one reply beside a commit instead
-- of three. Sent only on a client whose scripts keep to one hash slot (a
-- cluster); elsewhere commit.lua does the same itself. Idempotent: sending it again after a lost reply changes nothing.
-- KEYS: 1 activity, 2 names, 3 expires (one shard: one hash slot)
-- ARGV: 1 uid, 2 time of the write (Unix s), 3 when its keys expire ('' never)
-- (A uid is in the names set exactly when it is in the activity one: they
-- are written and removed together, so only a newly listed uid is added.)
if redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
return 0
