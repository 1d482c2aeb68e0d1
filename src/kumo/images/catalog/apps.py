"""The sources of the small apps in the catalog's `azuredocs/*` images and nginx's files, as text.

They stand in for the images Azure's docs use (`mcr.microsoft.com/azuredocs/aci-helloworld`, `aci-hellofiles`,
`aci-wordcount`): same ports, same behaviour a tutorial checks, written in Python instead of Node.
"""

from __future__ import annotations

HELLO_INDEX_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Welcome to Azure Container Instances!</title>
  <style>
    body { font-family: "Segoe UI", Helvetica, Arial, sans-serif; background: #fff; color: #222; margin: 0; }
    .banner { background: #0072c6; color: #fff; padding: 48px 24px; text-align: center; }
    h1 { font-weight: 300; font-size: 2.6em; margin: 0; }
    p { text-align: center; margin: 24px; }
  </style>
</head>
<body>
  <div class="banner"><h1>Welcome to Azure Container Instances!</h1></div>
  <p>This web app runs in a container group, served by kumo.</p>
</body>
</html>
"""

# Shared by the two web apps: a threaded HTTP server on [::]:80 (or 0.0.0.0:80 without IPv6) that logs each
# request to stdout in the combined log format, as the Node originals (express + morgan) do.
WEB_COMMON = '''\
import http.server
import os
import signal
import socket
import sys


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class LoggingHandler(http.server.BaseHTTPRequestHandler):
    server_version = "aci"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    def log_request(self, code="-", size="-"):
        code = getattr(code, "value", code)
        print(f'{self.client_address[0]} - - [{self.log_date_time_string()}] "{self.requestline}" {code} {size} '
              f'"{self.headers.get("Referer", "-")}" "{self.headers.get("User-Agent", "-")}"', flush=True)

    def send_page(self, body, status=200, ctype="text/html; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def serve(handler):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = int(os.environ.get("PORT", "80"))
    try:
        server = Server(("::", port), handler)
    except OSError:
        Server.address_family = socket.AF_INET
        Server.server_bind = http.server.ThreadingHTTPServer.server_bind
        server = Server(("0.0.0.0", port), handler)
    print(f"listening on port {port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
'''

HELLO_SERVER = '''\
"""aci-helloworld: the Azure Container Instances quickstart web app."""
import os

from web import LoggingHandler, serve

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = open(os.path.join(HERE, "index.html"), "rb").read()


class Handler(LoggingHandler):
    def do_GET(self):
        if self.path.split("?")[0] in ("/", "/index.html"):
            self.send_page(PAGE)
        else:
            self.send_page(b"Not Found\\n", 404, "text/plain")

    do_HEAD = do_GET


if __name__ == "__main__":
    serve(Handler)
'''

HELLOFILES_SERVER = '''\
"""aci-hellofiles: a web app that saves what you type as a file in /aci/logs (an Azure Files mount in the docs)."""
import datetime
import html
import os
import urllib.parse

from web import LoggingHandler, serve

LOGS = os.environ.get("LOGS_DIR", "/aci/logs")
FORM = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Welcome to Azure Container Instances!</title></head>
<body style="font-family: Segoe UI, Helvetica, Arial, sans-serif; text-align: center">
<h1>Welcome to Azure Container Instances!</h1>
<p>Enter a message to save it as a file in {logs}:</p>
<form method="post" action="/"><input name="message" size="40"> <button type="submit">Save</button></form>
<p>{note}</p>
</body></html>
"""


class Handler(LoggingHandler):
    def page(self, note=""):
        self.send_page(FORM.format(logs=html.escape(LOGS), note=note).encode())

    def do_GET(self):
        self.page()

    do_HEAD = do_GET

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        fields = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        message = fields.get("message", [""])[0]
        name = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%fZ") + ".txt"
        try:
            os.makedirs(LOGS, exist_ok=True)
            with open(os.path.join(LOGS, name), "w") as f:
                f.write(message + "\\n")
        except OSError as e:
            self.page(f"Could not write {html.escape(name)}: {html.escape(str(e))}")
            return
        print(f"wrote {os.path.join(LOGS, name)}", flush=True)
        self.page(f"Saved as {html.escape(name)}.")


if __name__ == "__main__":
    serve(Handler)
'''

WORDCOUNT = '''\
"""aci-wordcount: print the most common words of a text, then exit (Azure's restart-policy tutorial).

Environment: NumWords (how many, default 10), MinLength (shortest word counted, default 0). The argument is
a file or an http(s) URL (default: the bundled Hamlet excerpt); a URL that cannot be read exits with 1.
"""
import collections
import os
import re
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def read(source):
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as resp:
            return re.sub(r"<[^>]+>", " ", resp.read().decode("utf-8", "replace"))
    with open(source, encoding="utf-8") as f:
        return f.read()


def main():
    num = int(os.environ.get("NumWords", "10"))
    min_length = int(os.environ.get("MinLength", "0"))
    source = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "hamlet.txt")
    try:
        text = read(source)
    except Exception as e:  # noqa: BLE001 - any failure to read is the job failing
        print(f"cannot read {source}: {e}", file=sys.stderr, flush=True)
        return 1
    words = [w for w in re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower()) if len(w) >= min_length]
    print(collections.Counter(words).most_common(num), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''

HAMLET = """\
HAMLET. To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles
And by opposing end them. To die: to sleep;
No more; and by a sleep to say we end
The heart-ache and the thousand natural shocks
That flesh is heir to, 'tis a consummation
Devoutly to be wish'd. To die, to sleep;
To sleep: perchance to dream: ay, there's the rub;
For in that sleep of death what dreams may come
When we have shuffled off this mortal coil,
Must give us pause: there's the respect
That makes calamity of so long life;
For who would bear the whips and scorns of time,
The oppressor's wrong, the proud man's contumely,
The pangs of despised love, the law's delay,
The insolence of office and the spurns
That patient merit of the unworthy takes,
When he himself might his quietus make
With a bare bodkin? who would fardels bear,
To grunt and sweat under a weary life,
But that the dread of something after death,
The undiscover'd country from whose bourn
No traveller returns, puzzles the will
And makes us rather bear those ills we have
Than fly to others that we know not of?
Thus conscience does make cowards of us all;
And thus the native hue of resolution
Is sicklied o'er with the pale cast of thought,
And enterprises of great pith and moment
With this regard their currents turn awry,
And lose the name of action.

POLONIUS. Yet here, Laertes! aboard, aboard, for shame!
The wind sits in the shoulder of your sail,
And you are stay'd for. There; my blessing with thee!
And these few precepts in thy memory
See thou character. Give thy thoughts no tongue,
Nor any unproportioned thought his act.
Be thou familiar, but by no means vulgar.
Those friends thou hast, and their adoption tried,
Grapple them to thy soul with hoops of steel;
But do not dull thy palm with entertainment
Of each new-hatch'd, unfledged comrade. Beware
Of entrance to a quarrel, but being in,
Bear't that the opposed may beware of thee.
Give every man thy ear, but few thy voice;
Take each man's censure, but reserve thy judgment.
Neither a borrower nor a lender be;
For loan oft loses both itself and friend,
And borrowing dulls the edge of husbandry.
This above all: to thine own self be true,
And it must follow, as the night the day,
Thou canst not then be false to any man.
Farewell: my blessing season this in thee!
"""

NGINX_CONF = """\
user  nginx;
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /run/nginx.pid;


events {
    worker_connections  1024;
}


http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /var/log/nginx/access.log  main;

    sendfile        on;
    #tcp_nopush     on;

    keepalive_timeout  65;

    #gzip  on;

    include /etc/nginx/conf.d/*.conf;
}
"""

NGINX_DEFAULT_CONF = """\
server {
    listen       80;
    server_name  localhost;

    #access_log  /var/log/nginx/host.access.log  main;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }

    # redirect server error pages to the static page /50x.html
    #
    error_page   500 502 503 504  /50x.html;
    location = /50x.html {
        root   /usr/share/nginx/html;
    }
}
"""

NGINX_INDEX_HTML = """\
<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""

NGINX_50X_HTML = """\
<!DOCTYPE html>
<html>
<head>
<title>Error</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>An error occurred.</h1>
<p>Sorry, the page you are looking for is currently unavailable.<br/>
Please try again later.</p>
<p>If you are the system administrator of this resource then you should check
the error log for details.</p>
<p><em>Faithfully yours, nginx.</em></p>
</body>
</html>
"""
