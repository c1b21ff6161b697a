import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import redis.clients.jedis.Jedis;
import redis.clients.jedis.JedisSentinelPool;

/** Jedis {@code JedisSentinelPool}, default options; see ../README.md. */
public final class Main {
    private static final Pattern TCP_PORT = Pattern.compile("(?m)^tcp_port:(\\d+)");

    private static void emit(String ev, String fields) {
        System.out.println("{\"ev\":\"" + ev + "\",\"t\":" + System.currentTimeMillis()
                + (fields.isEmpty() ? "" : "," + fields) + "}");
        System.out.flush();
    }

    private static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 3) {
            System.err.println("usage: SENTINELS KEY SECONDS");
            System.exit(2);
        }
        Set<String> sentinels = new HashSet<>(Arrays.asList(args[0].split(",")));
        String key = args[1];
        long deadline = System.currentTimeMillis() + (long) (Double.parseDouble(args[2]) * 1000);
        String password = System.getenv("REDIS_PASSWORD");
        emit("start", "\"lib\":\"jedis " + Jedis.class.getPackage().getImplementationVersion() + "\"");
        JedisSentinelPool pool = password == null || password.isEmpty()
                ? new JedisSentinelPool("mymaster", sentinels)
                : new JedisSentinelPool("mymaster", sentinels, password, password);
        long writes = 0;
        int lastPort = -1;
        boolean afterError = true;
        while (System.currentTimeMillis() < deadline) {
            try (Jedis jedis = pool.getResource()) {
                jedis.incr(key);
                Matcher m = TCP_PORT.matcher(jedis.info("server"));
                int port = m.find() ? Integer.parseInt(m.group(1)) : -1;
                writes++;
                if (afterError || port != lastPort || writes % 100 == 0) {
                    emit("ok", "\"port\":" + port + ",\"n\":" + writes);
                }
                lastPort = port;
                afterError = false;
            } catch (RuntimeException e) {
                emit("err", "\"msg\":" + quote(e.getClass().getSimpleName() + ": " + e.getMessage()));
                afterError = true;
            }
            Thread.sleep(10);
        }
        pool.close();
    }
}
