-- Optional status-code accounting for wrk, loaded by health.lua / exec-unauth.lua
-- when BENCH_COUNT_STATUS=1 (http-bench.sh does this for the warm-up runs only:
-- a response() callback makes wrk parse every response into Lua, which costs
-- client CPU, so measured runs do not use it).
-- Prints one line at the end:  STATUS_COUNTS 200=12345 429=3
local threads = {}
counts = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts") or {}
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do parts[#parts + 1] = tostring(k) .. "=" .. tostring(v) end
  table.sort(parts)
  io.write("STATUS_COUNTS " .. table.concat(parts, " ") .. "\n")
end
