-- wrk script: POSTs BENCH_BODY with BENCH_HEADERS (one "Name: value" a line), counts answers
-- other than 200 and answers whose body holds BENCH_MARKER, and prints one summary line.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end
local marker = os.getenv("BENCH_MARKER") or ""
bad, marked = 0, 0
local threads = {}

function setup(thread) table.insert(threads, thread) end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
  if marker ~= "" and string.find(body, marker, 1, true) then marked = marked + 1 end
end

function done(summary, latency, requests)
  local e = summary.errors
  local b, m = e.connect + e.read + e.write + e.timeout, 0
  for _, thread in ipairs(threads) do
    b, m = b + thread:get("bad"), m + thread:get("marked")
  end
  io.write(string.format("BENCH %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), b, m))
end
