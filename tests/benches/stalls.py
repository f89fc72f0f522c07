#!/usr/bin/env python3
"""How often this machine stops a lone busy thread: a tight loop for N seconds (default 20)
counts the gaps between iterations longer than 1, 3 and 5 ms. On a quiet machine of its own a
gap over 1 ms is rare; on a shared VM the host's scheduling shows here, and no daemon can have a
tail shorter than these gaps. `python3 tests/benches/stalls.py [SECONDS]`."""
import sys
import time

secs = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
end = time.perf_counter() + secs
last = time.perf_counter()
gaps = []
n = 0
while True:
    t = time.perf_counter()
    n += 1
    if t - last > 0.001:
        gaps.append(t - last)
    last = t
    if t > end:
        break
print(
    f"{n} iterations in {secs:.0f} s; gaps over 1 ms: {len(gaps)}, over 3 ms: "
    f"{sum(g > 0.003 for g in gaps)}, over 5 ms: {sum(g > 0.005 for g in gaps)}, "
    f"longest {max(gaps) * 1000 if gaps else 0:.1f} ms"
)
