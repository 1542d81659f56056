module ndpipe-bench-enrich-http-go-peer

go 1.22
