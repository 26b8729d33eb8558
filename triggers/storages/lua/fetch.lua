-- Read what one operation on a session needs, in one round trip; the first
-- read of an operation also takes the session lock.
-- KEYS: 1 config, 2 index, 3 instances, 4 waiting, 5 counters, 6 kwargs, 7 meta,
--       8 received, 9 timers, 10 idempotency, 11 values, 12 lock, then the
--       lease key of each requested instance
-- ARGV: 1 lock token ('' reads without taking the lock), 2 lock expiry ms,
--       3 the request: four lists -- trigger names, task names, instance
--       names, kwargs names -- each joined with US (\31), the lists joined
--       with RS (\30); or, for a fire's request (one trigger, nothing else),
--       just the trigger's name (names hold no control characters),
--       4 idempotency key ('' or absent: none), 5 now (Unix seconds; only
--       with a key), 6 '1' to read timers (absent: no)
-- Returns nil when the lock is held by someone else (nothing read), else one
-- string of fields joined with US (stored values are JSON, which holds no raw
-- control characters; '' stands for a missing value), in this order:
--   meta,
--   n, then n x (trigger, index entry)                          the index
--   n, then n x (task, config, counter)                         the tasks
--   n, then n x (task, trigger, m, m x instance name)           waiting
--   n, then n x (instance, record, m or '', m x (trigger, kwargs))
--              instances, with what a named one received ('': not read;
--              RS + trigger for an unless trigger)
--   n, then n x (trigger, latest kwargs)                        kwargs
--   n, then n x (instance, lease ms left)                       leases
--   n, then n x (timer id, timer)                               timers
--   idempotency seen (0/1),
--   which state keys exist: config, index, instances, counters, kwargs,
--   waiting (1/0 each; see the end)
-- One flat string is much cheaper for both sides than a cjson-encoded reply
-- or nested multi-bulk replies. (Every redis.call, library call, table and
-- number turned into text costs here: the fire's path keeps to few.)
--
-- What a fire reads depends on its trigger, not on how many triggers its
-- tasks wait for: the records of the instances waiting on it come without
-- what they received (read only for the instances named in the request),
-- and the latest kwargs of a task's triggers are read only when this fire
-- will create an instance of it (the seed).
local VALUES, LOCK, FIRST_LEASE = 11, 12, 13
if ARGV[1] ~= '' and not redis.call('SET', KEYS[LOCK], ARGV[1], 'NX', 'PX', ARGV[2])
    and redis.call('GET', KEYS[LOCK]) ~= ARGV[1] then
  -- (Already ours only when a lost reply made the client send this again.)
  return false
end
local US, find, sub = '\31', string.find, string.sub
-- Counts go out as text: a Lua number turned into text costs a sprintf.
local DIGITS = {[0] = '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'}
local meta_raw = redis.call('GET', KEYS[7])

local EMPTY = {}
local trigs, req_tasks, req_insts, req_kwargs
local request = ARGV[3]
if not find(request, '\30', 1, true) then
  trigs, req_tasks, req_insts, req_kwargs = {request}, EMPTY, EMPTY, EMPTY
else
  local lists, from = {}, 1
  for l = 1, 4 do
    local upto = (find(request, '\30', from, true) or #request + 1) - 1
    local list = {}
    while from <= upto do
      local at = find(request, US, from, true)
      if not at or at > upto then at = upto + 1 end
      list[#list + 1] = sub(request, from, at - 1)
      from = at + 1
    end
    lists[l], from = list, upto + 2
  end
  trigs, req_tasks, req_insts, req_kwargs = lists[1], lists[2], lists[3], lists[4]
end

-- The values of fields names of hash key, as an array (nil: missing).
local function hmget(key, names)
  local n = #names
  if n == 1 then return {redis.call('HGET', key, names[1])} end
  local values = {}
  for from = 1, n, 1000 do  -- (unpack has a limit)
    local upto = math.min(from + 999, n)
    local got = redis.call('HMGET', key, unpack(names, from, upto))
    for i = from, upto do values[i] = got[i - from + 1] end
  end
  return values
end

-- present[k]: a read of KEYS[k] found something, so it exists.
local present = {}
local out = {meta_raw or '', DIGITS[#trigs] or tostring(#trigs)}
-- Puts a hash field's name and value ('' when missing) in the reply, noting
-- the hash as present when the value is there; returns the value.
local function emit(k, name, value)
  if value then present[k] = true else value = '' end
  out[#out + 1] = name
  out[#out + 1] = value
  return value
end

local task_seen, task_order = {}, {}
local index_lists = {}
for x = 1, #trigs do
  local trig = trigs[x]
  local raw = redis.call('HGET', KEYS[2], trig)
  local list = EMPTY
  if raw then present[2] = true; list = cjson.decode(raw) end
  index_lists[trig] = list
  out[#out + 1] = trig
  out[#out + 1] = raw or ''
  for y = 1, #list do
    local t = list[y]
    if not task_seen[t] then task_seen[t] = true; task_order[#task_order + 1] = t end
  end
end
for x = 1, #req_tasks do
  local t = req_tasks[x]
  if not task_seen[t] then task_seen[t] = true; task_order[#task_order + 1] = t end
end

local kw_seen, kw_order = {}, {}
for x = 1, #trigs + #req_kwargs do
  local trig = trigs[x] or req_kwargs[x - #trigs]
  if not kw_seen[trig] then kw_seen[trig] = true; kw_order[#kw_order + 1] = trig end
end

-- Every trigger name an after/unless list mentions (names and groups).
-- (Numeric loops throughout: an ipairs step is a C call, dear here.)
local function names_of(list, into)
  list = list or EMPTY
  for x = 1, #list do
    local item = list[x]
    if type(item) == 'string' then
      into[#into + 1] = item
    else
      local group = item['anyOf'] or item['of'] or EMPTY
      for y = 1, #group do into[#into + 1] = group[y] end
    end
  end
  return into
end

local n_tasks = #task_order
local cfg_values, ctr_values = EMPTY, EMPTY
if n_tasks > 0 then
  cfg_values = hmget(KEYS[1], task_order)
  ctr_values = hmget(KEYS[5], task_order)
end
local configs, raw_configs, counters = {}, {}, {}
out[#out + 1] = DIGITS[n_tasks] or tostring(n_tasks)
for i = 1, n_tasks do
  local t = task_order[i]
  local cfg, ctr = cfg_values[i], ctr_values[i]
  if cfg then present[1] = true else cfg = '' end
  if ctr then present[5] = true else ctr = '0' end
  out[#out + 1] = t
  out[#out + 1] = cfg
  out[#out + 1] = ctr
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
local groups_at, groups = #out + 1, 0
out[groups_at] = ''
for x = 1, #trigs do
  local trig = trigs[x]
  local list = index_lists[trig]
  for y = 1, #list do
    local t = list[y]
    local prefix = t .. US .. trig .. US
    local members = redis.call('ZRANGEBYLEX', KEYS[4], '[' .. prefix, '(' .. prefix .. '\255')
    local m = #members
    if m > 0 then present[4] = true end
    groups = groups + 1
    out[#out + 1] = t
    out[#out + 1] = trig
    out[#out + 1] = DIGITS[m] or tostring(m)
    for z = 1, m do
      local name = sub(members[z], #prefix + 1)
      out[#out + 1] = name
      if not inst_seen[name] then inst_seen[name] = true; inst_order[#inst_order + 1] = name end
    end
    -- The engine creates an instance when the task has none yet, or when
    -- this is its andEvery trigger and no instance waits on it: seed it.
    if counters[t] == '0' or m == 0 then
      local c = config_of(t)
      if c and (counters[t] == '0' or c['andEvery'] == trig) then
        local seeds = names_of(c['unless'], names_of(c['after'], {}))
        for z = 1, #seeds do
          local n = seeds[z]
          if not kw_seen[n] then kw_seen[n] = true; kw_order[#kw_order + 1] = n end
        end
      end
    end
  end
end
out[groups_at] = DIGITS[groups] or tostring(groups)
local named = {}
for x = 1, #req_insts do
  local n = req_insts[x]
  if not inst_seen[n] then inst_seen[n] = true; inst_order[#inst_order + 1] = n end
  named[n] = true
end

local records = #inst_order > 0 and hmget(KEYS[3], inst_order) or EMPTY
out[#out + 1] = DIGITS[#inst_order] or tostring(#inst_order)
for i = 1, #inst_order do
  local n = inst_order[i]
  local record = emit(3, n, records[i])
  if record ~= '' and not named[n] then
    -- An instance one requirement away from ready may become ready now: the
    -- caller then needs it whole (it is dispatched and returned).
    local ok, r = pcall(cjson.decode, record)
    local p = ok and type(r) == 'table' and r['progress']
    if type(p) ~= 'table' or (tonumber(p['after']) or 0) <= 1 then named[n] = true end
  end
  local c = named[n] and record ~= '' and config_of(string.match(n, '^(.*)#[^#]*$') or '')
  if c then
    -- A named instance is read whole: what it received, one field per trigger.
    local fields, asked = {}, {}
    for _, t in ipairs(names_of(c['after'], {})) do
      fields[#fields + 1] = n .. US .. t; asked[#asked + 1] = t
    end
    for _, t in ipairs(names_of(c['unless'], {})) do
      fields[#fields + 1] = n .. US .. US .. t; asked[#asked + 1] = '\30' .. t
    end
    local values = #fields > 0 and hmget(KEYS[8], fields) or EMPTY
    local count_at, count = #out + 1, 0
    out[count_at] = ''
    for j = 1, #fields do
      local v = values[j]
      if v then
        -- '@<digest>': a large value stored once in the values hash.
        if sub(v, 1, 1) == '@' then v = redis.call('HGET', KEYS[VALUES], sub(v, 2)) or 'null' end
        count = count + 1
        out[#out + 1] = asked[j]
        out[#out + 1] = v
      end
    end
    out[count_at] = DIGITS[count] or tostring(count)
  else
    out[#out + 1] = ''
  end
end

local kw_values = #kw_order > 0 and hmget(KEYS[6], kw_order) or EMPTY
out[#out + 1] = DIGITS[#kw_order] or tostring(#kw_order)
for i = 1, #kw_order do emit(6, kw_order[i], kw_values[i]) end

out[#out + 1] = DIGITS[#req_insts] or tostring(#req_insts)
for i, n in ipairs(req_insts) do
  out[#out + 1] = n
  out[#out + 1] = tostring(redis.call('PTTL', KEYS[FIRST_LEASE + i - 1]))
end

if ARGV[6] == '1' then
  local timers = redis.call('HGETALL', KEYS[9])
  out[#out + 1] = tostring(#timers / 2)
  for _, v in ipairs(timers) do out[#out + 1] = v end
else
  out[#out + 1] = '0'
end

local seen = '0'
if ARGV[4] and ARGV[4] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[10], ARGV[4])
  if expiry and tonumber(expiry) > tonumber(ARGV[5]) then seen = '1' end
end
out[#out + 1] = seen

-- Which state keys exist (config, index, instances, counters, kwargs,
-- waiting), so a fire can tell a partly vanished session without another
-- round trip. Only the keys the metadata says the session has are checked
-- (the others are reported absent): those are all a fire compares. The
-- waiting index is reported present unless it should exist and does not.
-- Usually every key not seen above exists: one EXISTS of them all says so,
-- and only when some are missing are they looked at one by one.
local PART_KEYS = {1, 2, 3, 5, 6, 4}
local parts, check = {}, {}
for i = 1, 6 do
  local k = PART_KEYS[i]
  if present[k] then parts[i] = '1' else check[#check + 1] = KEYS[k] end
end
if #check > 0 and redis.call('EXISTS', unpack(check)) < #check then
  local flags = EMPTY
  if meta_raw then
    -- What the metadata says the session has: a plain search first (the
    -- client writes compact JSON), any other spelling decoded.
    local decoded
    flags = {}
    for i, name in ipairs({'configured', 'configured', 'has_instances', 'has_instances', 'fired'}) do
      if find(meta_raw, '"' .. name .. '":true', 1, true) then
        flags[i] = true
      else
        if decoded == nil then
          local ok, m = pcall(cjson.decode, meta_raw)
          decoded = ok and type(m) == 'table' and m or false
        end
        flags[i] = decoded and decoded[name] and true or false
      end
    end
  end
  for i = 1, 5 do
    if parts[i] then
    elseif meta_raw and not flags[i] then
      parts[i] = '0'
    else
      parts[i] = redis.call('EXISTS', KEYS[PART_KEYS[i]]) == 1 and '1' or '0'
    end
  end
  -- Redis deletes an empty waiting index, so it is only lost when commit.lua
  -- left it non-empty (noted in the counters hash, a part checked above).
  if parts[6] then
  elseif meta_raw and parts[4] == '1' and redis.call('HGET', KEYS[5], '\31w') ~= '1' then
    parts[6] = '1'
  else
    parts[6] = redis.call('EXISTS', KEYS[4]) == 1 and '1' or '0'
  end
end
for i = 1, 6 do parts[i] = parts[i] or '1' end
out[#out + 1] = table.concat(parts)

return table.concat(out, US)
