"""Opens N keep-alive connections to HOST:PORT, sends one request on each,
reads the response, and holds them idle until stdin closes."""
import socket, sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for _ in range(n):
    s = socket.create_connection((host, port))
    s.sendall(b"GET /small HTTP/1.1\r\nhost: bench\r\n\r\n")
    s.recv(4096)
    socks.append(s)
print("open", len(socks), flush=True)
sys.stdin.read()
