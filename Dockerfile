# The qdn-relay server as a container: a shell-free runtime
# (distroless, glibc) running as an unprivileged user.
#
#   docker build -t qdn-relay .
#   docker run -p 8080:8080 -e QDN_TWILIO_NUMBER=... -e RELAY_CHAIN=... qdn-relay
#
# The build line below is the README's ("Building a release binary"); a
# test keeps the two the same, and ./scripts/test runs it.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p qdn-relay-cli --features dynamo

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/qdn-relay /usr/local/bin/qdn-relay
# The SQLite file (the default store) and the dev file of dry-run go to
# the user's home; mount a volume there to keep them. With
# RELAY_DYNAMO_TABLE set the state is in DynamoDB and the container keeps
# nothing.
WORKDIR /home/nonroot
USER nonroot:nonroot
ENV RELAY_LISTEN=0.0.0.0:8080 \
    RELAY_DB=/home/nonroot/qdn-relay.db
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/qdn-relay"]
CMD ["serve"]
