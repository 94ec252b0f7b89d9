#!/usr/bin/env python3
"""The design we replace, for comparison only: an exporter that runs tegrastats once
per scrape (start it, read one line, kill it, parse with regular expressions).
Usage: per-scrape-exporter.py PORT TEGRASTATS [INTERVAL_MS]"""
import re
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, TEGRASTATS = int(sys.argv[1]), sys.argv[2]
INTERVAL_MS = sys.argv[3] if len(sys.argv) > 3 else "100"
RAIL = re.compile(r"(\w+) (\d+)mW/(\d+)mW")
TEMP = re.compile(r"(\w+)@(-?[\d.]+)C")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        proc = subprocess.Popen([TEGRASTATS, "--interval", INTERVAL_MS], stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        proc.kill()
        proc.wait()
        out = []
        for name, cur, _avg in RAIL.findall(line):
            out.append(f"jetson_power_{name.lower()}_watts {int(cur) / 1000}")
        for name, value in TEMP.findall(line):
            out.append(f"jetson_temp_{name.lower()}_celsius {value}")
        body = ("\n".join(out) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
