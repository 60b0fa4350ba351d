"""Shows the locale and encodes non-ASCII text (the image sets en_US.UTF-8)."""

import http.server
import locale
import os
import sys

TEXT = "Grüße, 世界 ✓"
print("locale app:", TEXT)  # fails without PYTHONIOENCODING/a UTF-8 locale on an ASCII stdout


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (
            f"locale: {locale.setlocale(locale.LC_ALL, '')} "
            f"preferred={locale.getpreferredencoding(False)} fs={sys.getfilesystemencoding()} "
            f"stdout={sys.stdout.encoding} text={TEXT}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


PORT = int(os.environ.get("PORT", "8080"))
http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
