-- wrk script of benchmarks/writes.py: POST / {"name": "<PREFIX>-<thread>-<counter>"}, a name no other
-- request uses (PREFIX is random per run, given after "--"; at most 8 + 1 + 3 + 1 + 10 characters).
-- done() prints the figures as one JSON line, with how many requests the threads generated: wrk calls
-- request() once more on the first thread before the run to check the script, and never sends that one.
local threads = {}
local headers = { ["Content-Type"] = "application/json" }
local name_prefix = ""
generated = 0 -- a global: done() reads it with thread:get

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  name_prefix = args[1] .. "-" .. thread_number .. "-"
end

function request()
  generated = generated + 1
  return wrk.format("POST", "/", headers, '{"name": "' .. name_prefix .. generated .. '"}')
end

function done(summary, latency, requests)
  local sent = -1 -- the request that checked the script
  for _, thread in ipairs(threads) do
    sent = sent + thread:get("generated")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "sent": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, "max_us": %.0f, '
      .. '"statuses": ""}\n',
    summary.requests, summary.duration, sent, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
