# The test workload image: Debian's static busybox and nothing else (scripts/test-images
# fills rootfs/ with /bin/busybox, its applets as symlinks, and a minimal /etc).
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
CMD ["/bin/sh"]
