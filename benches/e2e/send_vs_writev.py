"""Kernel cost of one small write on a loopback TCP connection: send(2)
against writev(2) with one buffer. Run pinned, e.g.
    taskset -c 1 python3 benches/e2e/send_vs_writev.py
Prints CPU microseconds per call (the reading thread's included) and the
system part, for each way, twice."""
import socket, os, time, threading
def pair():
    l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen(1)
    c=socket.create_connection(l.getsockname()); s,_=l.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c,s
N=300000
msg=b'x'*200
def drain(s):
    while True:
        d=s.recv(1<<20)
        if not d: return
for mode in ['send','writev','send','writev']:
    c,s=pair(); t=threading.Thread(target=drain,args=(s,)); t.start()
    fd=c.fileno()
    t0=os.times()
    if mode=='send':
        for _ in range(N): c.send(msg)
    else:
        for _ in range(N): os.writev(fd,[msg])
    t1=os.times()
    c.close(); t.join(); s.close()
    print(mode, "sys+user us/call %.2f" % ((t1.system-t0.system+t1.user-t0.user)*1e6/N), "sys %.2f"%((t1.system-t0.system)*1e6/N))
