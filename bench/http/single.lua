-- wrk script: one event per POST, application/json.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"id":"evt-000000000001","type":"page_view","ts":"2026-11-02T01:01:07.001Z","user_id":442418,"amount":158.91,"currency":"USD","tags":["mobile","beta"],"meta":{"ip":"10.13.101.214","ua":"Mozilla/5.0 (X11; Linux x86_64)","seq":1}}'
