"""A small web shop as a WSGI application, and a load driver that sends it a mix of
requests: the bundled example of prof's README (`scripts/demo.sh`).

    python3 app.py [--requests N]     # drive N requests in-process, print latency by phase
    python3 app.py --serve 8000       # serve it on http://127.0.0.1:8000/ instead

Each request is marked with prof's request markers when it runs under `prof run` (the
`prof_markers` module is then importable), so the profile shows every request's latency
over the run — on PyPy, falling as the JIT compiles the hot paths — and the flamegraph can
be narrowed to the slow requests. Everything is pure Python except the sales report,
which asks SQLite.
"""

import json
import random
import sqlite3
import sys
import time
from urllib.parse import parse_qs

try:
    import prof_markers
except ImportError:  # not under `prof run`: no markers
    prof_markers = None

CATEGORIES = ["books", "garden", "kitchen", "music", "toys", "tools", "games", "sports"]


def make_catalog(n, rng):
    catalog = []
    for i in range(n):
        catalog.append(
            {
                "id": i,
                "name": "%s item %d" % (CATEGORIES[i % len(CATEGORIES)], i),
                "category": CATEGORIES[i % len(CATEGORIES)],
                "price": round(rng.uniform(2, 300), 2),
                "rating": round(rng.uniform(1, 5), 1),
                "stock": rng.randrange(0, 50),
                "features": [rng.random() for _ in range(12)],
            }
        )
    return catalog


class Shop(object):
    def __init__(self, seed=7):
        rng = random.Random(seed)
        self.catalog = make_catalog(2000, rng)
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute("create table sales (product int, qty int, price real, day int)")
        self.db.executemany(
            "insert into sales values (?, ?, ?, ?)",
            [
                (rng.randrange(2000), rng.randrange(1, 5), rng.uniform(2, 300), rng.randrange(365))
                for _ in range(4000)
            ],
        )

    # --- request handlers -------------------------------------------------------------

    def products(self, query):
        """A page of products, filtered, sorted, rendered to HTML."""
        category = query.get("category", ["books"])[0]
        key = query.get("sort", ["price"])[0]
        page = int(query.get("page", ["0"])[0])
        rows = [p for p in self.catalog if p["category"] == category]
        rows.sort(key=lambda p: (p[key], p["id"]))
        rows = rows[page * 50 : page * 50 + 50]
        return "text/html", render_table(rows)

    def product(self, pid):
        """One product and five recommendations, by cosine similarity of features."""
        me = self.catalog[pid]
        best = []  # the five most similar, most similar first
        for other in self.catalog:
            if other["id"] == pid:
                continue
            score = cosine(me["features"], other["features"])
            if len(best) < 5 or score > best[-1][0]:
                best.append((score, other["id"]))
                i = len(best) - 1
                while i > 0 and best[i - 1][0] < best[i][0]:
                    best[i - 1], best[i] = best[i], best[i - 1]
                    i -= 1
                del best[5:]
        scored = best
        body = dict(me)
        body["features"] = None
        body["recommended"] = [self.catalog[i]["name"] for _, i in scored[:5]]
        return "application/json", json.dumps(body)

    def checkout(self, form):
        """A cart's total with per-category tax and a discount code."""
        items = [(int(p), int(q)) for p, q in zip(form.get("product", []), form.get("qty", []))]
        total = 0.0
        lines = []
        for pid, qty in items:
            p = self.catalog[pid]
            tax = TAX.get(p["category"], 0.2)
            line = round(p["price"] * qty * (1 + tax), 2)
            lines.append({"name": p["name"], "qty": qty, "line": line})
            total += line
        code = form.get("code", [""])[0]
        if code.startswith("SAVE") and code[4:].isdigit():
            total *= 1 - min(int(code[4:]), 50) / 100.0
        return "application/json", json.dumps({"lines": lines, "total": round(total, 2)})

    def report(self):
        """Sales by month of the best products (SQLite does the work)."""
        rows = self.db.execute(
            "select product, day / 30 as month, sum(qty * price) as revenue, count(*) "
            "from sales group by product, month order by revenue desc limit 40"
        ).fetchall()
        return "text/html", render_table(
            [{"id": r[0], "name": "month %d" % r[1], "price": round(r[2], 2), "rating": r[3],
              "category": "", "stock": 0} for r in rows]
        )

    # --- WSGI ---------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            if path == "/products":
                ctype, body = self.products(query)
            elif path.startswith("/product/"):
                ctype, body = self.product(int(path.rsplit("/", 1)[1]))
            elif path == "/checkout":
                size = int(environ.get("CONTENT_LENGTH") or 0)
                ctype, body = self.checkout(parse_qs(environ["wsgi.input"].read(size).decode()))
            elif path == "/report/sales":
                ctype, body = self.report()
            elif path == "/":
                ctype, body = "text/html", INDEX
            else:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not found"]
        except (ValueError, IndexError, KeyError):
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"bad request"]
        data = body.encode("utf-8")
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(data)))])
        return [data]


TAX = {"books": 0.05, "music": 0.1, "toys": 0.2, "kitchen": 0.2, "garden": 0.15}

INDEX = """<!doctype html><title>shop</title><ul>
<li><a href="/products?sort=price">products</a><li><a href="/product/42">product 42</a>
<li><a href="/report/sales">sales report</a></ul>"""


def escape(s):
    return (
        str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def render_table(rows):
    out = ["<table><tr><th>id</th><th>name</th><th>category</th><th>price</th><th>rating</th></tr>"]
    for r in rows:
        cells = [r["id"], r["name"], r["category"], "%.2f" % r["price"], r["rating"]]
        out.append("<tr>" + "".join("<td>%s</td>" % escape(c) for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def cosine(a, b):
    dot = na = nb = 0.0
    for x, y in zip(a, b):
        dot += x * y
        na += x * x
        nb += y * y
    return dot / ((na * nb) ** 0.5 or 1.0)


# --- the load driver --------------------------------------------------------------------


def request_mix(n, seed=11):
    """A deterministic mix: 40% product pages, 35% product details, 20% checkouts, 5%
    sales reports."""
    rng = random.Random(seed)
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            q = "sort=%s&page=%d&category=%s" % (
                rng.choice(["price", "rating", "name"]),
                rng.randrange(5),
                rng.choice(CATEGORIES),
            )
            yield "GET", "/products", q, b""
        elif r < 0.75:
            yield "GET", "/product/%d" % rng.randrange(2000), "", b""
        elif r < 0.95:
            items = "&".join(
                "product=%d&qty=%d" % (rng.randrange(2000), rng.randrange(1, 4)) for _ in range(8)
            )
            yield "POST", "/checkout", "", (items + "&code=SAVE%d" % rng.randrange(30)).encode()
        else:
            yield "GET", "/report/sales", "", b""


def drive(app, n):
    import io

    latencies = []
    for method, path, query, body in request_mix(n):
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        t0 = time.perf_counter()
        result = app(environ, lambda status, headers: None)
        b"".join(result)
        if hasattr(result, "close"):
            result.close()
        latencies.append(time.perf_counter() - t0)
    return latencies


def main(argv):
    shop = Shop()
    app = prof_markers.WSGIMiddleware(shop) if prof_markers else shop
    if "--serve" in argv:
        from wsgiref.simple_server import make_server

        port = int(argv[argv.index("--serve") + 1])
        print("serving on http://127.0.0.1:%d/ (Ctrl-C to stop)" % port)
        make_server("127.0.0.1", port, app).serve_forever()
        return
    n = int(argv[argv.index("--requests") + 1]) if "--requests" in argv else 1500
    latencies = drive(app, n)
    tenth = max(1, n // 10)
    first = sum(latencies[:tenth]) / tenth * 1e3
    last = sum(latencies[-tenth:]) / tenth * 1e3
    print(
        "%s: %d requests, mean latency %.2f ms in the first tenth, %.2f ms in the last"
        % (sys.implementation.name, n, first, last)
    )


if __name__ == "__main__":
    main(sys.argv[1:])
