-- start.lua: start the entries an agent received from a blocking XREADGROUP.
-- ARGV: prefix, worker, then triples (priority, entry id, job id or ''). Returns claim JSONs.
local worker = ARGV[2]
local out = {}
for i = 3, #ARGV, 3 do
  local id = ARGV[i + 2]
  if id == '' then id = nil end
  local c = start(worker, ARGV[i], ARGV[i + 1], id)
  if c then out[#out + 1] = c end
end
count_taken(worker, #out)
return out
