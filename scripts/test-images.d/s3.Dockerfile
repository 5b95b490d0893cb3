# The S3 workload image: the static lattice-s3 and nothing else (scripts/test-images puts the
# binary in rootfs/). Plain HTTP on 9000; data on the volume mounted at /data.
FROM scratch
COPY rootfs/ /
ENV LATTICE_S3_LISTEN=0.0.0.0:9000 LATTICE_S3_DATA=/data
EXPOSE 9000
ENTRYPOINT ["/lattice-s3"]
