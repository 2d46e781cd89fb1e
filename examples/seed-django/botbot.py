"""The seed article's benchmark, reproduced: "Faster Django Sites with PyPy" (Lincoln Loop
and Maciej Fijalkowski) ran a set of simple Django ORM queries distilled from the BotBot
IRC logger against SQLite, and plotted request time against CPU seconds since start.

Each request (a few ORM queries: a channel's logs in a time window, counts, the latest
lines, a search) is a prof request marker named after its kind, so `prof run --web`
shows the same plot in the viewer: request latency over CPU time, beside the
interpreter / warm-up / JIT split.

    python botbot.py [REQUESTS]      (default 3000)
"""
import datetime
import sys
import time

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    INSTALLED_APPS=["django.contrib.contenttypes"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    USE_TZ=False,
)
django.setup()

from django.db import connection, models  # noqa: E402
from django.db.models import Count  # noqa: E402

try:
    import prof_markers
except ImportError:  # not under `prof run`
    prof_markers = None


class Channel(models.Model):
    name = models.CharField(max_length=80, unique=True)
    is_public = models.BooleanField(default=True)

    class Meta:
        app_label = "contenttypes"

    def filtered_logs(self):
        return Log.objects.filter(channel=self).exclude(command__in=["PING", "JOIN", "QUIT"])


class Log(models.Model):
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE)
    timestamp = models.DateTimeField(db_index=True)
    nick = models.CharField(max_length=40)
    text = models.TextField()
    command = models.CharField(max_length=20)

    class Meta:
        app_label = "contenttypes"


START = datetime.datetime(2015, 1, 1)


def setup():
    with connection.schema_editor() as editor:
        editor.create_model(Channel)
        editor.create_model(Log)
    channels = Channel.objects.bulk_create(Channel(name="#chan%d" % i) for i in range(20))
    commands = ["PRIVMSG"] * 8 + ["PING", "JOIN"]
    Log.objects.bulk_create(
        Log(
            channel=channels[i % 20],
            timestamp=START + datetime.timedelta(minutes=i),
            nick="nick%d" % (i % 37),
            text="message %d about pypy and django" % i,
            command=commands[i % len(commands)],
        )
        for i in range(6000)
    )


def window(i):
    t0 = START + datetime.timedelta(minutes=(i * 7) % 5000)
    return Channel.objects.get(name="#chan%d" % (i % 20)), t0, t0 + datetime.timedelta(hours=8)


def logs_between(i):
    channel, t0, t1 = window(i)
    return len(list(channel.filtered_logs().filter(timestamp__gte=t0, timestamp__lt=t1)[:50]))


def nick_counts(i):
    channel, t0, t1 = window(i)
    rows = (
        channel.filtered_logs()
        .filter(timestamp__gte=t0, timestamp__lt=t1)
        .values("nick")
        .annotate(n=Count("id"))
        .order_by("-n")[:10]
    )
    return sum(r["n"] for r in rows)


def latest(i):
    channel, _, _ = window(i)
    return len([l.text for l in channel.filtered_logs().order_by("-timestamp")[:20]])


def search(i):
    channel, _, _ = window(i)
    return channel.filtered_logs().filter(text__contains="about %d" % (i % 10)).count()


KINDS = [logs_between, nick_counts, latest, search]


def main(n):
    setup()
    cpu0 = time.process_time()
    marks = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        t0 = time.perf_counter()
        if prof_markers:
            with prof_markers.mark(kind.__name__):
                kind(i)
        else:
            kind(i)
        marks.append((time.process_time() - cpu0, time.perf_counter() - t0))
    # The article's numbers: mean request time per set of 100 (fewer for short runs), at
    # the CPU second the set ended; six sets spread over the run.
    print("%s: %d requests" % (sys.implementation.name, n))
    size = max(1, min(100, n // 6))
    for k in range(0, n - size + 1, max(size, (n - size) // 5 or 1)):
        chunk = marks[k : k + size]
        mean = sum(d for _, d in chunk) / len(chunk) * 1e3
        print("  after %5.2f CPU s: %.2f ms per request" % (chunk[-1][0], mean))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
