-- Extend a worker's lease on a running instance if it is still that worker's.
-- KEYS: 1 lease key; ARGV: token, ms. Returns 1 if extended.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
