-- wrk script for bench/overload.sh: 64 connections mixing ingest (1/2), components (1/4)
-- and projections (1/4) on one model. Counts statuses, 5xx with and without
-- Retry-After, and the rows of acknowledged batches (every batch has ROWS rows).
local ROWS, DIM = 32, 16
local threads = {}
local counter = 0

local function batch(seed)
  local rows = {}
  for r = 1, ROWS do
    local row = {}
    for c = 1, DIM do
      -- A deterministic spread of values, larger along the first coordinates.
      row[c] = string.format("%.3f", math.sin(seed * 7.1 + r * 1.3 + c * 0.7) * (DIM + 1 - c))
    end
    rows[r] = "[" .. table.concat(row, ",") .. "]"
  end
  return '{"x":[' .. table.concat(rows, ",") .. "]}"
end

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  acked_rows, ok, retry503, bad5xx, other = 0, 0, 0, 0, 0
  n = 0
  bodies = {}
  for i = 1, 16 do bodies[i] = batch(id * 100 + i) end
  project = '{"x":' .. string.sub(batch(id), 6, -2) .. ',"reconstruct":true}'
  json = { ["Content-Type"] = "application/json" }
end

function request()
  n = n + 1
  local k = n % 4
  if k == 0 or k == 2 then
    return wrk.format("POST", "/v1/models/load/samples", json, bodies[(n % 16) + 1])
  elseif k == 1 then
    return wrk.format("GET", "/v1/models/load/components")
  else
    return wrk.format("POST", "/v1/models/load/project", json, project)
  end
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    local a = string.match(body, '"accepted":(%d+)')
    if a then acked_rows = acked_rows + tonumber(a) end
  elseif status == 503 and (headers["Retry-After"] or headers["retry-after"]) then
    retry503 = retry503 + 1
  elseif status >= 500 then
    bad5xx = bad5xx + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t = { acked_rows = 0, ok = 0, retry503 = 0, bad5xx = 0, other = 0 }
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
  end
  io.write(string.format(
    'RESULT {"requests":%d,"ok":%d,"503_retry_after":%d,"other_5xx":%d,"other":%d,' ..
    '"acked_rows":%d,"p50_ms":%.1f,"p99_ms":%.1f,"socket_errors":%d}\n',
    summary.requests, t.ok, t.retry503, t.bad5xx, t.other, t.acked_rows,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
