-- wrk script for OpenCDP benchmarks: POSTs a JSON body template with a unique messageId per event, or (with
-- MODE "get") GETs a path picked at random from the lines of TEMPLATE_FILE (the profile API benchmark).
--
--   wrk -s collect.lua URL -- TEMPLATE_FILE AUTHORIZATION RUN_TAG [RATE_PER_THREAD] [MODE]
--
-- TEMPLATE_FILE holds the body with "__MID__" where each messageId goes (1 for /v1/track, 100 for a batch).
-- Each id is "<run tag>-<thread>-<request counter>-<index>", padded to 36 characters like a UUID, so ids are
-- unique across threads, requests and runs. RATE_PER_THREAD (requests/s of each wrk thread; 0 or absent:
-- as fast as possible) paces requests with wrk's delay() hook against a per-thread schedule read from CLOCK_MONOTONIC:
-- a connection that gets its answer waits until the next free slot of its thread's schedule. This is not
-- wrk2: latency is measured from when a request is actually written, and requests that could not be sent on
-- time are counted and reported as "late" (a late count near zero means the schedule was held, so the
-- figures are not hiding queueing behind a slow server). At the end one line starting with "WRKJSON " holds
-- the summary as JSON.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } cdp_timespec;
int clock_gettime(int clk_id, cdp_timespec *tp);
]]
local ts = ffi.new("cdp_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local parts, paths, headers, tag, interval, next_slot
counter = 0
late = 0

function init(args)
  if args[5] == "get" then
    paths = {}
    for line in io.lines(args[1]) do table.insert(paths, line) end
    headers = { ["Authorization"] = args[2] }
    tag = args[3]
    local rate = tonumber(args[4] or "0")
    if rate > 0 then interval = 1000.0 / rate end
    math.randomseed(tid)
    return
  end
  local f = assert(io.open(args[1], "rb"))
  local template = f:read("*a")
  f:close()
  parts = {}
  local start = 1
  while true do
    local i, j = template:find("__MID__", start, true)
    if not i then break end
    table.insert(parts, template:sub(start, i - 1))
    start = j + 1
  end
  table.insert(parts, template:sub(start))
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = args[2],
  }
  tag = args[3]
  local rate = tonumber(args[4] or "0")
  if rate > 0 then
    interval = 1000.0 / rate
  end
end

function request()
  counter = counter + 1
  if paths then
    return wrk.format("GET", paths[math.random(#paths)], headers)
  end
  local n = #parts - 1
  local buf = {}
  local base = string.format("%s-%02d-%010d-", tag, tid, counter)
  for i = 1, n do
    buf[2 * i - 1] = parts[i]
    buf[2 * i] = string.format("%s%04d", base, i)
  end
  buf[2 * n + 1] = parts[n + 1]
  return wrk.format("POST", nil, headers, table.concat(buf))
end

function delay()
  if not interval then return 0 end
  local now = now_ms()
  if not next_slot then next_slot = now end
  next_slot = next_slot + interval
  local wait = next_slot - now
  if wait < -1 then
    late = late + 1
    return 0
  end
  return math.max(0, wait)
end

function done(summary, latency, requests)
  local sent, lates = 0, 0
  for _, t in ipairs(threads) do
    sent = sent + (t:get("counter") or 0)
    lates = lates + (t:get("late") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"p999_us":%d,"max_us":%d,"mean_us":%.1f,"sent":%d,"late":%d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, sent, lates))
end
