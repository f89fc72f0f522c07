#!/usr/bin/env python3
"""The baseline: what an installer might write instead of tiketo-gate, doing the same job in
plain Python (termios for the serial port, urllib for the API, sqlite3 to keep the scan), and
printing the door's outputs as the daemon's `sim` backend does. One request per call, no
connection reuse, no offline policy, no debounce: the simple version.

    baseline.py PORT URL TOKEN DBFILE
"""
import json
import os
import sqlite3
import sys
import termios
import time
import urllib.request
import uuid

PASS = "query PassByScanCode($code: String!) { passByScanCode(code: $code) { id templateId expirationDate voided project { id } } }"
EVENT = "mutation CreateScanEvent($input: ScanEventInput!) { createScanEvent(input: $input) { id voided } }"


def main():
    port, url, token, dbfile = sys.argv[1:5]
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
    attrs = termios.tcgetattr(fd)
    attrs[0] = attrs[1] = attrs[3] = 0  # raw: no input, output or local processing
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    db = sqlite3.connect(dbfile)
    db.execute("CREATE TABLE IF NOT EXISTS scans (id TEXT, code TEXT, ok INTEGER, at TEXT)")

    def gql(name, query, variables):
        body = json.dumps({"query": query, "operationName": name, "variables": variables}).encode()
        req = urllib.request.Request(url, data=body, headers={"Authorization": "TOKEN " + token, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=0.8) as r:
            return json.load(r)

    def out(name, on):
        print(json.dumps({"ts_ms": int(time.time() * 1000), "output": name, "on": on}, separators=(",", ":")), flush=True)

    buf = b""
    while True:
        buf += os.read(fd, 4096)
        while True:
            cut = min((i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0), default=-1)
            if cut < 0:
                break
            line, buf = buf[:cut], buf[cut + 1:]
            code = line.strip().decode("utf-8", "replace")
            if not code:
                continue
            ok = False
            try:
                p = gql("PassByScanCode", PASS, {"code": code})["data"]["passByScanCode"]
                if p and not p.get("voided"):
                    scan_id = str(uuid.uuid4())
                    data = json.dumps({"scanId": scan_id, "scannedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                    ev = gql("CreateScanEvent", EVENT, {"input": {"code": code, "data": data}})
                    ok = bool(ev.get("data")) and not ev["data"]["createScanEvent"]["voided"]
            except Exception:
                ok = False
            db.execute("INSERT INTO scans VALUES (?, ?, ?, datetime('now'))", (str(uuid.uuid4()), code, int(ok)))
            db.commit()
            out("relay" if ok else "red", True)
            out("relay" if ok else "red", False)


if __name__ == "__main__":
    main()
