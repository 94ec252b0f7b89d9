-- wrk script: 10,000 devices polling every 30 s is 333 requests/s. Each of the
-- 10 connections waits 30 ms after each answer (about 33 req/s each) and asks,
-- as an exporter does, with its last revision in If-None-Match (the seed made
-- revision 1 of every device, so the answer is 304 Not Modified).
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/config/dev-" .. math.random(1, 10000), {
    ["If-None-Match"] = '"1"',
    ["User-Agent"] = "edge-metrics-exporter/0.1.0",
  })
end
function delay()
  return 30
end
