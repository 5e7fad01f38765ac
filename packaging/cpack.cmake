# Install rules and the Debian package (cpack -G DEB).  Included at the end of
# the top-level CMakeLists.txt.  The paths follow the installed layout the
# install script and the docs share:
#   /usr/bin/cap-server, /usr/bin/cap-sandbox (the children's sandbox helper)
#   /lib/systemd/system/cap-server.service
#   /etc/cap-server/config.json, /etc/cap-server/presets.json   (conffiles)
#   /usr/share/man/man1/cap-server.1.gz
#   /usr/share/doc/cap-server/{README.md,API.md,OPERATIONS.md,copyright}
# The unit and /etc files use absolute destinations on purpose: systemd and
# dpkg look there whatever the install prefix is.

set(CAP_PKG_DIR ${CMAKE_CURRENT_SOURCE_DIR}/packaging)

# Debian wants man pages compressed, with no name or time stamp in the gzip
# header so that the package is reproducible.
find_program(CAP_GZIP gzip REQUIRED)
add_custom_command(
  OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/cap-server.1.gz
  COMMAND ${CAP_GZIP} -9 -n -c ${CAP_PKG_DIR}/cap-server.1 > ${CMAKE_CURRENT_BINARY_DIR}/cap-server.1.gz
  DEPENDS ${CAP_PKG_DIR}/cap-server.1
  COMMENT "Compressing the man page"
  VERBATIM)
add_custom_target(cap-server-manpage ALL DEPENDS ${CMAKE_CURRENT_BINARY_DIR}/cap-server.1.gz)

install(TARGETS cap-server cap-sandbox RUNTIME DESTINATION bin)
install(FILES ${CAP_PKG_DIR}/systemd/cap-server.service DESTINATION /lib/systemd/system)
install(FILES ${CAP_PKG_DIR}/config.json ${CAP_PKG_DIR}/presets.json DESTINATION /etc/cap-server)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/cap-server.1.gz DESTINATION share/man/man1)
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/README.md ${CMAKE_CURRENT_SOURCE_DIR}/docs/API.md
              ${CMAKE_CURRENT_SOURCE_DIR}/docs/OPERATIONS.md ${CAP_PKG_DIR}/deb/copyright
        DESTINATION share/doc/cap-server)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cap-server)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "cap-server maintainers")
set(CPACK_PACKAGE_CONTACT "cap-server maintainers")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "run ffmpeg and ffprobe jobs for authenticated HTTP clients")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# The packaged binary carries no debug information.
set(CPACK_STRIP_FILES ON)
# Packages never land in the source tree: the suite passes -B <tmpdir>, and
# a plain "cpack" writes into the build directory.
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/packages)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "cap-server maintainers")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# CPack puts CPACK_PACKAGE_DESCRIPTION_SUMMARY on the first line itself.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "cap-server turns a GPU workstation behind NAT into a node of a cloud media
pipeline: a Cloudflare Worker reaches it through Tailscale Funnel (install
tailscale from Tailscale's own repository) and sends POST /exec with a bearer
token; cap-server fetches the input from R2, S3 or a local store, runs ffmpeg
or ffprobe from a bounded pool (presets only, no shell) and stores the
output.
.
The service starts only once /etc/cap-server/tokens holds a token; see
cap-server(1).")
# The dependencies are listed by hand rather than computed by dpkg-shlibdeps,
# so that building the package needs no dpkg-dev and the list stays readable.
# They follow the binary's DT_NEEDED entries (libcrypto.so.3 is in libssl3;
# glibc 2.34 is the newest symbol version it uses); the packaging test fails
# when a needed library's package is missing here.  adduser is used by the
# postinst, ffmpeg provides the capabilities themselves.
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libc6 (>= 2.34), libuv1 (>= 1.44), libcjson1 (>= 1.7.15), libcurl4 (>= 7.88), libssl3 (>= 3.0), libsqlite3-0 (>= 3.40), ffmpeg, adduser")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
# The postinst's instructions create the first token with "openssl rand".
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "openssl")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CAP_PKG_DIR}/deb/conffiles ${CAP_PKG_DIR}/deb/postinst ${CAP_PKG_DIR}/deb/prerm
    ${CAP_PKG_DIR}/deb/postrm)
# Maintainer scripts 0755 and conffiles 0644 whatever the checkout's modes are.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

include(CPack)
