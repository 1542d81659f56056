#!/usr/bin/env bash
# A tap client that stops reading: connects to PORT as soon as something listens there,
# asks for every event after validate, and never reads the answer (until killed).
port=$1
until exec 3<>"/dev/tcp/127.0.0.1/$port"; do sleep 0.002; done 2>/dev/null
printf 'GET /tap?after=validate HTTP/1.1\r\nHost: bench\r\n\r\n' >&3
sleep 60
