-- wrk script: PUT a 200-metric config to a random one of the 10,000 devices
-- (unconditional: every request makes a new revision, a synced SQLite commit).
math.randomseed(os.time())
local parts = {}
for i = 1, 200 do
  parts[#parts + 1] = string.format('"bench_metric_%03d_watts": %s', i, i % 3 == 0 and "true" or "false")
end
local body = '{"device_type": "jetson_orin", "interval": 1, "metrics": {' .. table.concat(parts, ", ") .. '}}'
request = function()
  return wrk.format("PUT", "/config/dev-" .. math.random(1, 10000),
    { ["Content-Type"] = "application/json" }, body)
end
