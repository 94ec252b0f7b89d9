-- wrk script: each connection waits 4 ms after every response, so two
-- connections send about 500 requests per second.
function delay()
  return 4
end
