-- wrk script for the prefill benchmark: POST /v1/prefill/<service>/lookup {"nik": "<NIK>"},
-- cycling through the NIKs in $BENCH_NIKS (one a line) with the bearer token in $BENCH_TOKEN.
-- Prints one line "BENCH_JSON {...}" with the figures (latencies in microseconds) for
-- bench/prefill.py.
local token = os.getenv("BENCH_TOKEN")
local service = os.getenv("BENCH_SERVICE")
local niks = {}
for line in io.lines(os.getenv("BENCH_NIKS")) do
  niks[#niks + 1] = line
end
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter * 7919)
end

local path = "/v1/prefill/" .. service .. "/lookup"

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Content-Type"] = "application/json"
  counter = offset or 0
end

function request()
  counter = counter + 1
  return wrk.format("POST", path, nil, '{"nik": "' .. niks[counter % #niks + 1] .. '"}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_status": %d, ' ..
    '"errors_timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    latency.mean))
end
