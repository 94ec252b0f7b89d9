-- wrk script: GET /config/dev-N for a random one of the 10,000 seeded devices.
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/config/dev-" .. math.random(1, 10000))
end
