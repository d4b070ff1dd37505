-- wrk script: POSTs BENCH_BODY with BENCH_HEADERS, counts non-200 answers, prints one JSON line.
-- The request is static (built once per thread by wrk.init), so wrk spends no Lua time on it.
-- With BENCH_MARKER set, it also counts the answers whose body contains that exact text.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

local marker = os.getenv("BENCH_MARKER") or ""
non200 = 0
marked = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
  if marker ~= "" and body and string.find(body, marker, 1, true) then marked = marked + 1 end
end

function done(summary, latency, requests)
  local bad, hits = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non200")
    hits = hits + thread:get("marked")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "non200": %d, "socket_errors": %d, "marked": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, bad, e.connect + e.read + e.write + e.timeout, hits))
end
