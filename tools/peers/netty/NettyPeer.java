// netty peer: a reference market-data server for tickwire-bench, written the
// way Netty's users write a broadcast: HttpServerCodec + HttpObjectAggregator +
// WebSocketServerProtocolHandler, and one ChannelGroup per symbol (plus one,
// "*", for everything) to which each update is written once
// (`group.writeAndFlush(frame)`: one frame, shared by every channel).
//
// Versions: Java 17 (Debian default-jdk-headless), Netty 4.1.48 (Debian
// libnetty-java), compiled with javac against /usr/share/java/*.jar by
// tools/peers/run (Maven Central is out of reach). Netty's defaults: NIO
// transport, 2 x cores event-loop threads, pooled direct buffers.
//
// What it does (see ../README.md for the contract): welcome; subscribe to
// ["*"] or to named symbols; `ping` answered with `pong`. The feed is
// open-loop: update k is due at start + k/R, and a scheduled task every 1 ms
// emits every update that is due. Symbols S0000.. are picked round-robin, or
// by Zipf weights with --zipf S. Since an update is encoded once for all the
// channels of its group, a quote carries no per-connection `cseq` (nor do the
// replies), and `to` is the time of that one encoding. Times are ns since the
// Unix epoch from `Instant.now()` (the realtime clock, microsecond steps).
//
// What it deliberately does not do: no batching of several quotes per frame,
// no conflation (`mode` and `max_hz` are ignored: every update is sent), no
// slow-consumer policy (a channel's outbound buffer grows without bound), no
// heartbeats. Requests are read with two regular expressions instead of a
// JSON library: only `type`, `id` and `symbols` matter, and Debian's Jackson
// would be one more package to install for three fields.

import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.SimpleChannelInboundHandler;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.channel.nio.NioEventLoopGroup;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpObjectAggregator;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpServerCodec;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.websocketx.TextWebSocketFrame;
import io.netty.handler.codec.http.websocketx.WebSocketServerProtocolHandler;
import io.netty.util.concurrent.GlobalEventExecutor;
import java.net.InetSocketAddress;
import java.time.Instant;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public final class NettyPeer {
    static final String SERVER = "netty/4.1.48";
    static final ChannelGroup EVERYTHING = new DefaultChannelGroup("*", GlobalEventExecutor.INSTANCE);
    static final ConcurrentHashMap<String, ChannelGroup> BY_SYMBOL = new ConcurrentHashMap<>();
    static final AtomicLong SESSIONS = new AtomicLong();
    static final Pattern TYPE = Pattern.compile("\"(?:type|action|method)\"\\s*:\\s*\"(\\w+)\"");
    static final Pattern ID = Pattern.compile("\"id\"\\s*:\\s*(\\d+)");
    static final Pattern SYMBOLS = Pattern.compile("\"symbols\"\\s*:\\s*\\[([^\\]]*)\\]");
    static final Pattern NAME = Pattern.compile("\"([^\"]*)\"");

    /** Wall-clock ns since the Unix epoch. */
    static long nowNs() {
        Instant i = Instant.now();
        return i.getEpochSecond() * 1_000_000_000L + i.getNano();
    }

    static String symbol(int i) {
        return String.format("S%04d", i);
    }

    /** One WebSocket session: welcome on the handshake, then requests. */
    static final class Session extends SimpleChannelInboundHandler<TextWebSocketFrame> {
        @Override
        public void userEventTriggered(ChannelHandlerContext ctx, Object evt) throws Exception {
            if (evt instanceof WebSocketServerProtocolHandler.HandshakeComplete) {
                long n = SESSIONS.incrementAndGet();
                ctx.writeAndFlush(new TextWebSocketFrame("[{\"type\":\"welcome\",\"session\":\"p-" + n
                        + "\",\"server\":\"" + SERVER + "\",\"time_unit\":\"ns\",\"hb_ms\":1000,\"epoch\":\"peer\"}]"));
            } else {
                super.userEventTriggered(ctx, evt);
            }
        }

        @Override
        protected void channelRead0(ChannelHandlerContext ctx, TextWebSocketFrame frame) {
            String text = frame.text();
            Matcher type = TYPE.matcher(text);
            if (!type.find()) {
                return;
            }
            Matcher idm = ID.matcher(text);
            String id = idm.find() ? idm.group(1) : "null";
            Channel ch = ctx.channel();
            switch (type.group(1)) {
                case "subscribe": {
                    Matcher syms = SYMBOLS.matcher(text);
                    boolean all = true;
                    if (syms.find() && !syms.group(1).contains("\"*\"")) {
                        all = false;
                        Matcher name = NAME.matcher(syms.group(1));
                        while (name.find()) {
                            BY_SYMBOL.computeIfAbsent(name.group(1),
                                    s -> new DefaultChannelGroup(s, GlobalEventExecutor.INSTANCE)).add(ch);
                        }
                    }
                    if (all) {
                        EVERYTHING.add(ch);
                    }
                    ctx.writeAndFlush(new TextWebSocketFrame(
                            "[{\"type\":\"subscribed\",\"id\":" + id + ",\"subs\":[],\"rejected\":[]}]"));
                    break;
                }
                case "ping":
                    ctx.writeAndFlush(new TextWebSocketFrame(
                            "[{\"type\":\"pong\",\"id\":" + id + ",\"t\":" + nowNs() + "}]"));
                    break;
                default:
                    break;
            }
        }
    }

    /** Plain HTTP requests that were not upgraded: 404. */
    static final class NotFound extends SimpleChannelInboundHandler<FullHttpRequest> {
        @Override
        protected void channelRead0(ChannelHandlerContext ctx, FullHttpRequest req) {
            DefaultFullHttpResponse res = new DefaultFullHttpResponse(HttpVersion.HTTP_1_1, HttpResponseStatus.NOT_FOUND);
            res.headers().set(HttpHeaderNames.CONTENT_LENGTH, 0);
            ctx.writeAndFlush(res).addListener(ChannelFutureListener.CLOSE);
        }
    }

    /** The open-loop quote feed of the contract. */
    static final class Feed implements Runnable {
        final int symbols;
        final double rate;
        final long[] seq;
        final long[] mid;
        final long[] spread;
        final double[] cumulative; // Zipf weights, null for round-robin
        final Random rng = new Random();
        final long startNano;
        final long startWall;
        long emitted = 0;

        Feed(int symbols, double rate, double zipf) {
            this.symbols = symbols;
            this.rate = rate;
            // The first Instant.now() loads classes (tens of us): not between
            // the two readings that pair the monotonic and the wall clock.
            nowNs();
            startNano = System.nanoTime();
            startWall = nowNs();
            seq = new long[symbols];
            mid = new long[symbols];
            spread = new long[symbols];
            for (int i = 0; i < symbols; i++) {
                mid[i] = 5000 + rng.nextInt(20000); // cents
                spread[i] = 1 + rng.nextInt(3);
            }
            if (zipf > 0) {
                cumulative = new double[symbols];
                double sum = 0;
                for (int i = 0; i < symbols; i++) {
                    sum += 1.0 / Math.pow(i + 1, zipf);
                    cumulative[i] = sum;
                }
                for (int i = 0; i < symbols; i++) {
                    cumulative[i] /= sum;
                }
            } else {
                cumulative = null;
            }
        }

        int pick(long k) {
            if (cumulative == null) {
                return (int) (k % symbols);
            }
            double u = rng.nextDouble();
            int lo = 0;
            int hi = symbols - 1;
            while (lo < hi) {
                int m = (lo + hi) >>> 1;
                if (cumulative[m] < u) {
                    lo = m + 1;
                } else {
                    hi = m;
                }
            }
            return lo;
        }

        long lot() {
            return 100L * (1 + rng.nextInt(20));
        }

        @Override
        public void run() {
            // Updates 0..=k with k/R <= elapsed are due: floor(elapsed * R) + 1.
            long due = (long) ((System.nanoTime() - startNano) / 1e9 * rate) + 1;
            while (emitted < due) {
                int i = pick(emitted);
                mid[i] = Math.max(100, mid[i] + rng.nextInt(5) - 2);
                seq[i]++;
                long t = startWall + (long) (emitted * 1e9 / rate);
                long ti = nowNs();
                String sym = symbol(i);
                String json = "[{\"type\":\"q\",\"sym\":\"" + sym + "\",\"seq\":" + seq[i]
                        + ",\"bp\":" + (mid[i] / 100.0) + ",\"bs\":" + lot()
                        + ",\"ap\":" + ((mid[i] + spread[i]) / 100.0) + ",\"as\":" + lot()
                        + ",\"t\":" + t + ",\"ti\":" + ti + ",\"to\":" + nowNs() + "}]";
                EVERYTHING.writeAndFlush(new TextWebSocketFrame(json));
                ChannelGroup group = BY_SYMBOL.get(sym);
                if (group != null) {
                    group.writeAndFlush(new TextWebSocketFrame(json));
                }
                emitted++;
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String host = "127.0.0.1";
        int port = 0;
        int symbols = 1000;
        double rate = 1000;
        double zipf = 0;
        for (int i = 0; i < args.length; i++) {
            String v = i + 1 < args.length ? args[i + 1] : "";
            switch (args[i]) {
                case "--host": host = v; i++; break;
                case "--port": port = Integer.parseInt(v); i++; break;
                case "--symbols": symbols = Integer.parseInt(v); i++; break;
                case "--rate": rate = Double.parseDouble(v); i++; break;
                case "--zipf": zipf = Double.parseDouble(v); i++; break;
                default:
                    System.err.println("unknown argument: " + args[i]);
                    System.exit(2);
            }
        }
        if (port < 0 || port > 65535 || symbols < 1 || symbols > 10000 || !(rate > 0) || !(zipf >= 0)) {
            System.err.println("usage: NettyPeer [--host H] [--port 0..65535] [--symbols 1..10000] [--rate R>0] [--zipf S>=0]");
            System.exit(2);
        }
        NioEventLoopGroup boss = new NioEventLoopGroup(1);
        NioEventLoopGroup workers = new NioEventLoopGroup();
        ServerBootstrap b = new ServerBootstrap()
                .group(boss, workers)
                .channel(NioServerSocketChannel.class)
                .childHandler(new ChannelInitializer<SocketChannel>() {
                    @Override
                    protected void initChannel(SocketChannel ch) {
                        ch.pipeline().addLast(
                                new HttpServerCodec(),
                                new HttpObjectAggregator(65536),
                                // path /ws, any query string (checkStartsWith)
                                new WebSocketServerProtocolHandler("/ws", null, true, 65536, false, true),
                                new NotFound(),
                                new Session());
                    }
                });
        Channel server = b.bind(host, port).sync().channel();
        int bound = ((InetSocketAddress) server.localAddress()).getPort();
        System.out.println("listening on ws://" + host + ":" + bound + "/ws");
        System.out.flush();

        ScheduledExecutorService ticker = Executors.newSingleThreadScheduledExecutor();
        ticker.scheduleAtFixedRate(new Feed(symbols, rate, zipf), 1, 1, TimeUnit.MILLISECONDS);
        // SIGTERM / SIGINT: exit 0 (the JVM's own handler exits 143 / 130),
        // stopping the feed and dropping the connections on the way out.
        for (String name : new String[] {"TERM", "INT"}) {
            sun.misc.Signal.handle(new sun.misc.Signal(name), sig -> System.exit(0));
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            ticker.shutdownNow();
            server.close();
            boss.shutdownGracefully(0, 0, TimeUnit.MILLISECONDS);
            workers.shutdownGracefully(0, 0, TimeUnit.MILLISECONDS);
        }));
        server.closeFuture().sync();
    }
}
