module ndpipe-bench-enrich-http-service

go 1.22
