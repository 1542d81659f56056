-- wrk script: NDJSON bodies of 1,000 events (the file named by BODY, default
-- bench/out/body-1000.ndjson), application/x-ndjson.
local path = os.getenv("BODY") or "bench/out/body-1000.ndjson"
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
wrk.body = f:read("*a")
f:close()
