# paygrid-server image: docker build -t paygrid:0.1.0 .
#
# Two stages: the build stage installs the project into a virtualenv and
# generates the gRPC stubs; the runtime stage gets that virtualenv only (no
# pip cache, no sources, no build tools).

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The same path in both stages: a virtualenv's scripts name their
# interpreter by absolute path, so it only works where it was made.
RUN python -m venv /opt/paygrid
ENV PATH=/opt/paygrid/bin:$PATH

WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that editing the code
# does not reinstall grpcio & co. on every build.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY server ./server
COPY clients/python ./clients/python
RUN pip install --no-deps .

# The stubs are not in git: generate them from the protos with the same
# script (and grpcio-tools, a dev dependency: installed for this step, then
# removed) as scripts/setup does, then put them in site-packages, so that
# `paygrid.v1` & co. import like any installed package.
# The script empties its output folder, hence a folder of its own first.
# The import at the end fails the build, not the first start, if a stub
# or a package is missing.
COPY protos ./protos
COPY scripts/generate_protos.py ./scripts/
RUN python -c 'import tomllib; print(next(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"] if d.startswith("grpcio-tools")))' \
        > /tmp/tools.txt \
 && pip install -r /tmp/tools.txt \
 && python scripts/generate_protos.py --out /tmp/gen \
 && pip uninstall --yes --quiet grpcio-tools \
 && site_packages=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && cp -r /tmp/gen/paygrid "$site_packages/" \
 && python -m compileall -q "$site_packages/paygrid" \
 && python -I -c 'import paygrid.v1.payment_service_pb2_grpc, paygrid_server.app'


FROM python:3.11-slim

# A fixed numeric id: Kubernetes can only check runAsNonRoot against a
# number, and the volume's owner must match across image rebuilds.
RUN groupadd --system --gid 10001 paygrid \
 && useradd --system --uid 10001 --gid paygrid --no-create-home \
            --home-dir /var/lib/paygrid --shell /usr/sbin/nologin paygrid \
 && install -d -o paygrid -g paygrid -m 0750 /var/lib/paygrid

COPY --from=build /opt/paygrid /opt/paygrid
COPY config/paygrid.example.toml /etc/paygrid/paygrid.example.toml

# The stubs were compiled at build time; at run time the root file system
# may be read-only (the Kubernetes manifests make it so).
ENV PATH=/opt/paygrid/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PAYGRID_LISTEN=0.0.0.0:50051 \
    PAYGRID_METRICS_LISTEN=0.0.0.0:9464 \
    PAYGRID_DATABASE=/var/lib/paygrid/paygrid.sqlite3

# Declared after the directory is made and chowned: a new volume is seeded
# from the image, ownership included, so the non-root user can write to it.
VOLUME ["/var/lib/paygrid"]
# The one writable place when the root file system is read-only, so a
# relative path in a config file lands on the volume too.
WORKDIR /var/lib/paygrid
USER 10001:10001

EXPOSE 50051 9464
# The server drains on SIGTERM (health NOT_SERVING, drain delay, grace);
# give `docker stop -t` at least drain delay + 2 x grace seconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["paygrid-server", "serve"]
