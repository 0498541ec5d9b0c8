-- wrk script for leitstand's benchmarks: POST one fixed body over and over, count the answers
-- by status class per thread, and print one machine-readable summary line in done().
--
-- Environment: BENCH_BODY_FILE (the request body), BENCH_CONTENT_TYPE, BENCH_TOKEN (X-Auth).

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

wrk.method = "POST"
wrk.body = read_file(os.getenv("BENCH_BODY_FILE"))
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
wrk.headers["X-Auth"] = os.getenv("BENCH_TOKEN") or "bench"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, non_ok = 0, 0
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    non_ok = non_ok + 1
  end
end

function done(summary, latency, requests)
  local ok_total, non_ok_total = 0, 0
  for _, thread in ipairs(threads) do
    ok_total = ok_total + thread:get("ok")
    non_ok_total = non_ok_total + thread:get("non_ok")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"ok":%d,"non_ok":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, ok_total, non_ok_total,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
