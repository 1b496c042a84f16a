# syntax=docker/dockerfile:1
#
# strata as a container: `strata agent` by default (the sidecar), any other
# command with `docker run strata <command>`.
#
#   docker build -t strata .
#   docker run --rm -v $PWD/strata.toml:/etc/strata/strata.toml:ro \
#     -e STRATA_PASSWORD_FILE=/run/secrets/strata-password ... strata
#
# The final image is distroless (glibc, no shell, no curl): the HEALTHCHECK
# uses `strata healthcheck`, which GETs the agent's /healthz.

# ---- build ------------------------------------------------------------------
# Same Debian release as the runtime image below, so the glibc matches.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin strata \
    && install -D -m 0755 target/release/strata /out/strata

# ---- runtime ----------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/strata /usr/local/bin/strata
# uid/gid 65532; its HOME (/home/nonroot) holds the cache of index files.
USER nonroot:nonroot
ENV STRATA_CONFIG=/etc/strata/strata.toml
# /healthz, /readyz, /metrics, POST /jobs/NAME/run (set [agent] listen =
# "0.0.0.0:9898" or STRATA_AGENT_LISTEN to reach it from outside).
EXPOSE 9898
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["strata", "healthcheck"]
ENTRYPOINT ["strata"]
CMD ["agent"]
