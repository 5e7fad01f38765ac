-- wrk script: GET /health (no auth). The URL given to wrk must end in /health.
wrk.method = "GET"

if os.getenv("BENCH_COUNT_STATUS") == "1" then
  dofile((os.getenv("BENCH_DIR") or "bench") .. "/wrk-status.lua")
end
