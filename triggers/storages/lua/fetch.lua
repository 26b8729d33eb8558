-- Read what one operation on a session needs, in one round trip; the first
-- read of an operation also takes the session lock.
-- KEYS: 1 config, 2 index, 3 instances, 4 waiting, 5 counters, 6 kwargs, 7 meta,
--       8 received, 9 timers, 10 idempotency, 11 values, 12 recent commits,
--       13 lock, 14 lock signal, then the lease key of each requested instance
-- ARGV: 1 lock token ('' reads without taking the lock), 2 lock expiry ms,
--       3 JSON [[trigger names], [task names], [instance names], [kwargs names]],
--       4 idempotency key ('' none), 5 now (Unix seconds), 6 '1' to read timers
-- Returns nil when the lock is held by someone else (nothing read), else
-- JSON [meta, index, tasks, waiting, instances, kwargs, leases, parts,
-- received, idempotency seen (0/1), timers] where each part after meta is a
-- flat array ('' stands for a missing value; an empty array may come back as
-- {}). One JSON string is much cheaper for the client to parse than nested
-- multi-bulk replies.
--
-- What a fire reads depends on its trigger, not on how many triggers its
-- tasks wait for: the records of the instances waiting on it come without
-- what they received (read only for the instances named in the request),
-- and the latest kwargs of a task's triggers are read only when this fire
-- will create an instance of it (the seed).
local VALUES, LOCK, FIRST_LEASE = 11, 13, 15
if ARGV[1] ~= '' and not redis.call('SET', KEYS[LOCK], ARGV[1], 'NX', 'PX', ARGV[2])
    and redis.call('GET', KEYS[LOCK]) ~= ARGV[1] then
  -- (Already ours only when a lost reply made the client send this again.)
  return false
end
local SEP = '\31'
local meta_raw = redis.call('GET', KEYS[7])
local wanted = cjson.decode(ARGV[3])
local trigs, req_tasks, req_insts, req_kwargs = wanted[1], wanted[2], wanted[3], wanted[4]

local task_seen, task_order = {}, {}
local function add_task(t)
  if not task_seen[t] then task_seen[t] = true; task_order[#task_order + 1] = t end
end

-- present[k]: a read of KEYS[k] found something, so it exists.
local present = {}
local function found(k, value)
  if value then present[k] = true end
  return value
end

local index_out, index_lists = {}, {}
for _, trig in ipairs(trigs) do
  local raw = found(2, redis.call('HGET', KEYS[2], trig))
  local list = {}
  if raw then list = cjson.decode(raw) end
  index_lists[trig] = list
  index_out[#index_out + 1] = trig
  index_out[#index_out + 1] = raw or ''
  for _, t in ipairs(list) do add_task(t) end
end
for _, t in ipairs(req_tasks) do add_task(t) end

local kw_seen, kw_order = {}, {}
local function add_kw(t)
  if not kw_seen[t] then kw_seen[t] = true; kw_order[#kw_order + 1] = t end
end
for _, trig in ipairs(trigs) do add_kw(trig) end
for _, trig in ipairs(req_kwargs) do add_kw(trig) end

-- Every trigger name an after/unless list mentions (names and groups).
local function names_of(list, out)
  for _, item in ipairs(list or {}) do
    if type(item) == 'string' then
      out[#out + 1] = item
    else
      for _, n in ipairs(item['anyOf'] or item['of'] or {}) do out[#out + 1] = n end
    end
  end
  return out
end

local tasks_out, configs, raw_configs, counters = {}, {}, {}, {}
for _, t in ipairs(task_order) do
  local cfg = found(1, redis.call('HGET', KEYS[1], t)) or ''
  local ctr = found(5, redis.call('HGET', KEYS[5], t)) or '0'
  tasks_out[#tasks_out + 1] = t
  tasks_out[#tasks_out + 1] = cfg
  tasks_out[#tasks_out + 1] = ctr
  counters[t] = ctr
  raw_configs[t] = cfg
end
-- A config is decoded only when needed (a wide task's is large).
local function config_of(t)
  if configs[t] == nil then
    local raw = raw_configs[t]
    if raw == nil then raw = redis.call('HGET', KEYS[1], t) or '' end
    configs[t] = raw ~= '' and cjson.decode(raw) or false
  end
  return configs[t]
end

local inst_seen, inst_order = {}, {}
local function add_inst(n)
  if not inst_seen[n] then inst_seen[n] = true; inst_order[#inst_order + 1] = n end
end
local waiting_out = {}
for _, trig in ipairs(trigs) do
  for _, t in ipairs(index_lists[trig]) do
    local prefix = t .. SEP .. trig .. SEP
    local members = redis.call('ZRANGEBYLEX', KEYS[4], '[' .. prefix, '(' .. prefix .. '\255')
    local names = {}
    if members[1] then present[4] = true end
    for i, m in ipairs(members) do
      names[i] = string.sub(m, #prefix + 1)
      add_inst(names[i])
    end
    waiting_out[#waiting_out + 1] = t
    waiting_out[#waiting_out + 1] = trig
    waiting_out[#waiting_out + 1] = names
    -- The engine creates an instance when the task has none yet, or when
    -- this is its andEvery trigger and no instance waits on it: seed it.
    if counters[t] == '0' or not members[1] then
      local c = config_of(t)
      if c and (counters[t] == '0' or c['andEvery'] == trig) then
        for _, n in ipairs(names_of(c['unless'], names_of(c['after'], {}))) do add_kw(n) end
      end
    end
  end
end
local named = {}
for _, n in ipairs(req_insts) do add_inst(n); named[n] = true end

local inst_out, received_out = {}, {}
for _, n in ipairs(inst_order) do
  local record = found(3, redis.call('HGET', KEYS[3], n)) or ''
  inst_out[#inst_out + 1] = n
  inst_out[#inst_out + 1] = record
  if record ~= '' and not named[n] then
    -- An instance one requirement away from ready may become ready now: the
    -- caller then needs it whole (it is dispatched and returned).
    local ok, r = pcall(cjson.decode, record)
    local p = ok and type(r) == 'table' and r['progress']
    if type(p) ~= 'table' or (tonumber(p['after']) or 0) <= 1 then named[n] = true end
  end
  if named[n] and record ~= '' then
    -- A named instance is read whole: what it received, one field per trigger.
    local c = config_of(string.match(n, '^(.*)#[^#]*$') or '')
    if c then
      local fields, asked = {}, {}
      for _, t in ipairs(names_of(c['after'], {})) do
        fields[#fields + 1] = n .. SEP .. t; asked[#asked + 1] = t
      end
      for _, t in ipairs(names_of(c['unless'], {})) do
        fields[#fields + 1] = n .. SEP .. SEP .. t; asked[#asked + 1] = SEP .. t
      end
      local got = {}
      for from = 1, #fields, 1000 do
        local upto = math.min(from + 999, #fields)
        local values = redis.call('HMGET', KEYS[8], unpack(fields, from, upto))
        for i = from, upto do
          local v = values[i - from + 1]
          if v then
            -- '@<digest>': a large value stored once in the values hash.
            if string.sub(v, 1, 1) == '@' then v = redis.call('HGET', KEYS[VALUES], string.sub(v, 2)) or 'null' end
            got[#got + 1] = asked[i]; got[#got + 1] = v
          end
        end
      end
      received_out[#received_out + 1] = n
      received_out[#received_out + 1] = got
    end
  end
end

local kw_out = {}
for _, t in ipairs(kw_order) do
  kw_out[#kw_out + 1] = t
  kw_out[#kw_out + 1] = found(6, redis.call('HGET', KEYS[6], t)) or ''
end

local lease_out = {}
for i, n in ipairs(req_insts) do
  lease_out[#lease_out + 1] = n
  lease_out[#lease_out + 1] = redis.call('PTTL', KEYS[FIRST_LEASE + i - 1])
end

local seen = 0
if ARGV[4] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[10], ARGV[4])
  if expiry and tonumber(expiry) > tonumber(ARGV[5]) then seen = 1 end
end
local timers_out = {}
if ARGV[6] == '1' then timers_out = redis.call('HGETALL', KEYS[9]) end

-- Which state keys exist (config, index, instances, counters, kwargs,
-- waiting), so a fire can tell a partly vanished session without another
-- round trip. Only the keys the metadata says the session has are checked
-- (the others are reported absent): those are all a fire compares. The
-- waiting index is reported present unless it should exist and does not.
local expect = {}
if meta_raw then
  local ok, m = pcall(cjson.decode, meta_raw)
  if ok and type(m) == 'table' then
    expect[1] = m['configured']; expect[2] = m['configured']
    expect[3] = m['has_instances']; expect[5] = m['has_instances']
    expect[6] = m['fired']
  end
end

local parts = {}
for _, k in ipairs({1, 2, 3, 5, 6}) do
  if present[k] then
    parts[#parts + 1] = 1
  elseif meta_raw and not expect[k] then
    parts[#parts + 1] = 0
  else
    parts[#parts + 1] = redis.call('EXISTS', KEYS[k])
  end
end
-- Redis deletes an empty waiting index, so it is only lost when commit.lua
-- left it non-empty (noted in the counters hash, a part checked above).
if present[4] or (meta_raw and parts[4] == 1 and redis.call('HGET', KEYS[5], '\31w') ~= '1') then
  parts[#parts + 1] = 1
else
  parts[#parts + 1] = redis.call('EXISTS', KEYS[4])
end

return cjson.encode({
  meta_raw or '', index_out, tasks_out, waiting_out, inst_out, kw_out, lease_out, parts,
  received_out, seen, timers_out
})
