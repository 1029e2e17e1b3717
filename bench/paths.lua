-- wrk script: each thread walks its own slice of a path list (one path per line).
-- Args after "--": the path file. WRK_COUNT_CACHE=1 also counts X-Cache answers.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  paths = {}
  for line in io.lines(args[1]) do
    if #line > 0 then table.insert(paths, line) end
  end
  nthreads = tonumber(args[2])
  index = tid + 1
  wrapped = 0
  hits = 0
  misses = 0
end

function request()
  local path = paths[index]
  index = index + nthreads
  if index > #paths then
    index = tid + 1
    wrapped = wrapped + 1
  end
  return wrk.format("GET", path)
end

if os.getenv("WRK_COUNT_CACHE") == "1" then
  function response(status, headers, body)
    local cache = headers["X-Cache"] or headers["x-cache"]
    if cache == "HIT" then hits = hits + 1 elseif cache == "MISS" then misses = misses + 1 end
  end
end

function done(summary, latency, requests)
  local wraps, h, m = 0, 0, 0
  for _, thread in ipairs(threads) do
    wraps = wraps + thread:get("wrapped")
    h = h + thread:get("hits")
    m = m + thread:get("misses")
  end
  local e = summary.errors
  io.write(string.format(
    'JSON:{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,' ..
    '"timeouts":%d,"wrapped":%d,"hits":%d,"misses":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, e.connect, e.read, e.write,
    e.status, e.timeout, wraps, h, m))
end
