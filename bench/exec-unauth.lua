-- wrk script: unauthenticated POST /exec with a JSON body and no Authorization
-- header. Expected answer from both servers: 401
-- {"error":"Unauthorized","code":"unauthorized"}. The URL given to wrk must end
-- in /exec.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = nil
wrk.body = '{"capability":"ffmpeg-render","input_key":"uploads/raw.mp4","output_key":"renders/final.mp4","preset":"1080p"}'

if os.getenv("BENCH_COUNT_STATUS") == "1" then
  dofile((os.getenv("BENCH_DIR") or "bench") .. "/wrk-status.lua")
end
