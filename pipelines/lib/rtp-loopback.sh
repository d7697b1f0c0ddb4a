# SPDX-License-Identifier: MPL-2.0
# Sourced by the pipelines/ examples that send encrypted RTP over loopback UDP. The
# rtp-*.sh ones, from one gst-launch-1.0 to another, define:
#   NAME      its name, for messages;
#   OUT       a directory for the decodes and the sender's log;
#   sender    a function running the sending gst-launch-1.0 to 127.0.0.1:$PORT; it
#             also writes the unencrypted decode of the same frames (the reference);
#   receiver  a function that execs gst-launch-1.0 -e receiving on $PORT and writing
#             the decrypted decode;
# then calls check_over_loopback with the two decodes, the bytes of one decoded frame
# and the number of frames.

fail() {
    echo "$NAME: FAILED: $*" >&2
    exit 1
}

# True when a local UDP socket (IPv4 or IPv6) is bound to port $1.
udp_port_bound() {
    grep -q ": *[0-9A-F]*:$(printf %04X "$1") " /proc/net/udp /proc/net/udp6 2>/dev/null
}

free_udp_port() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        port=$(shuf -i 20000-59999 -n 1)
        udp_port_bound "$port" || { echo "$port"; return; }
    done
    fail "no free UDP port found"
}

# Waits until process $2 has bound UDP port $1: from then on nothing the sender sends
# is lost (datagrams wait in the socket until the pipeline reads them).
wait_until_listening() {
    for _ in $(seq 200); do
        udp_port_bound "$1" && return
        kill -0 "$2" 2>/dev/null || fail "the receiver exited before listening on port $1"
        sleep 0.05
    done
    fail "the receiver did not listen on port $1 within 10 s"
}

# RTP over UDP does not carry the end of the stream, so the receiver never ends by
# itself: once file $2 holds $3 bytes (every frame decoded), or after 5 s without them,
# process $1 (a gst-launch-1.0 -e) gets SIGINT, so that it ends with EOS and its files
# are complete. Returns its exit status.
stop_receiver() {
    for _ in $(seq 100); do
        [ "$(stat -c %s "$2" 2>/dev/null || echo 0)" -ge "$3" ] && break
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    kill -INT "$1" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$1" 2>/dev/null; then
        echo "$NAME: the receiver did not stop on SIGINT; killing it" >&2
        kill -KILL "$1"
    fi
    wait "$1"
}

# UDP datagrams the kernel dropped so far (receive errors, full socket buffers on
# either side), in the whole network namespace.
udp_drops() {
    awk '/^Udp:/ && ++line == 2 { print $4 + $7 }' /proc/net/snmp
}

# Checks that decode $2 holds exactly $4 frames of $3 bytes, equal to reference $1.
same_frames() {
    expected=$(($3 * $4))
    reference_size=$(stat -c %s "$1" 2>/dev/null || echo 0)
    [ "$reference_size" -eq "$expected" ] ||
        { echo "$NAME: the reference decode has $((reference_size / $3)) frames, not $4" >&2; return 1; }
    received_size=$(stat -c %s "$2" 2>/dev/null || echo 0)
    [ "$received_size" -eq "$expected" ] ||
        { echo "$NAME: the receiver decoded $((received_size / $3)) of $4 frames" >&2; return 1; }
    if ! difference=$(cmp "$1" "$2"); then
        byte=$(echo "$difference" | sed -n 's/.* byte \([0-9]*\),.*/\1/p')
        echo "$NAME: decoded frame $(((byte - 1) / $3)) differs from the unencrypted decode" >&2
        return 1
    fi
}

# One run: receiver, then sender, then the comparison (arguments as same_frames).
# Called in a condition, so each step's status is checked here, not by set -e.
send_and_receive() {
    rm -f "$1" "$2"
    PORT=$(free_udp_port) || exit 1
    receiver &
    receiver_pid=$!
    wait_until_listening "$PORT" $receiver_pid
    # The sender's messages are shown when it fails (openh264enc prints an error
    # line at every normal end of stream).
    if ! sender 2>"$OUT/sender.log"; then
        kill -KILL $receiver_pid
        wait $receiver_pid 2>/dev/null || true
        cat "$OUT/sender.log" >&2
        echo "$NAME: the sender failed" >&2
        return 1
    fi
    stop_receiver $receiver_pid "$2" $(($3 * $4)) || { echo "$NAME: the receiver failed" >&2; return 1; }
    same_frames "$@"
}

# Runs "$@"; if it fails while the kernel dropped UDP datagrams (a loaded machine),
# once more, saying so. Any other failure is final.
run_retrying_once_on_udp_loss() {
    drops=$(udp_drops)
    "$@" && return
    [ "$(udp_drops)" -eq "$drops" ] && return 1
    echo "$NAME: the kernel dropped $(($(udp_drops) - drops)) UDP datagrams during the run; trying once more" >&2
    "$@"
}

check_over_loopback() {
    run_retrying_once_on_udp_loss send_and_receive "$@"
}
