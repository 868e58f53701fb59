-- Sums the buckets of each group of keys.
-- KEYS[1]: the user's key prefix. ARGV[1]: '1' to include per-model fields. ARGV[2]: the
-- groups, a JSON list of lists of key suffixes. ARGV[3]: the measures' fields, a JSON list.
-- Returns, per group, the measures' sums in that order and, when asked, the per-model fields
-- (FIELD|MODEL) as a flat field/value list after them. Lua's numbers are doubles: a group
-- of one key (the all-time totals) answers its stored integers as they are, exact to
-- Redis's 2**63; a sum of several is exact to 2**53 (nine million dollars in nanodollars).
local prefix = KEYS[1]
local with_models = ARGV[1] == '1'
local groups = cjson.decode(ARGV[2])
local fields = cjson.decode(ARGV[3])
local position = {}
for i, field in ipairs(fields) do position[field] = i end
local out = {}
for gi, group in ipairs(groups) do
  local row = {}
  for i = 1, #fields do row[i] = 0 end
  local models = {}
  local function add(sum, value)
    if #group == 1 then return value end
    return (sum or 0) + (tonumber(value) or 0)
  end
  for _, suffix in ipairs(group) do
    if with_models then
      local flat = redis.call('HGETALL', prefix .. suffix)
      for k = 1, #flat, 2 do
        local field, value = flat[k], flat[k + 1]
        local i = position[field]
        if i then
          row[i] = add(row[i], value)
        elseif string.find(field, '|', 1, true) then
          models[field] = add(models[field], value)
        end
      end
    else
      -- Only the measures: a full minute bucket also holds every model's fields.
      local values = redis.call('HMGET', prefix .. suffix, unpack(fields))
      for i = 1, #fields do row[i] = add(row[i], values[i] or 0) end
    end
  end
  if with_models then
    for field, value in pairs(models) do
      table.insert(row, field)
      table.insert(row, value)
    end
  end
  out[gi] = row
end
return out
