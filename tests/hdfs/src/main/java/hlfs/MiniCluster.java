package hlfs;

import java.io.BufferedReader;
import java.io.File;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.MiniDFSCluster.DataNodeProperties;
import org.apache.hadoop.hdfs.MiniDFSNNTopology;
import org.apache.hadoop.hdfs.protocol.HdfsConstants;
import org.apache.hadoop.hdfs.protocol.DatanodeInfo;

/**
 * A real HDFS for the HLFS tests: Hadoop's MiniDFSCluster (a NameNode, or an
 * HA pair behind the name service "hlfs-ns", and N DataNodes, all in this
 * JVM), controlled by line commands on stdin.
 *
 * <pre>
 * java -cp ... hlfs.MiniCluster --dir DIR --conf CONF_DIR [--datanodes 4] [--ha] [--port 9000] [--bind ADDR]
 * </pre>
 *
 * By default everything listens on 127.0.0.1 (MiniDFSCluster's choice). With
 * --bind ADDR (an address of this host, e.g. a bridge's address that network
 * namespaces route to) the NameNode and the DataNodes listen on ADDR only
 * and hand it out: the URI is hdfs://ADDR:PORT and the DataNodes register
 * with ADDR (they reach the NameNode through ADDR, and the NameNode records
 * the address a DataNode registers from). Not with --ha.
 *
 * It writes CONF_DIR/core-site.xml and hdfs-site.xml (for HADOOP_CONF_DIR),
 * then prints one line "READY hdfs://..." on stdout. Each command line gets
 * one answer line, "ok ..." or "error ...":
 *
 * <pre>
 * stop-datanode N        stop DataNode N (0-based), keeping its storage
 * start-datanode N       start a stopped DataNode N again, on its old ports
 * stop-namenode [I]      stop NameNode I (default: the active one)
 * start-namenode [I]     start a stopped NameNode I again (HA: as standby)
 * failover               HA: make the standby NameNode active, the active one standby
 * quota PATH BYTES|none  set (or clear) the space quota of directory PATH
 * status                 "ok active=I namenodes=I,I datanodes=N up=N"
 * shutdown               stop everything and exit (so does the end of stdin)
 * </pre>
 */
public final class MiniCluster {
    private final MiniDFSCluster cluster;
    private final boolean ha;
    private int active = 0;
    private final Map<Integer, DataNodeProperties> stoppedDataNodes = new HashMap<>();
    private final boolean[] nameNodeDown;
    /** With --bind: a client of the bound NameNode (cluster.getFileSystem() would dial 127.0.0.1). */
    private DistributedFileSystem boundFs;

    private MiniCluster(MiniDFSCluster cluster, boolean ha) {
        this.cluster = cluster;
        this.ha = ha;
        this.nameNodeDown = new boolean[ha ? 2 : 1];
    }

    public static void main(String[] args) throws Exception {
        String dir = null;
        String confDir = null;
        int dataNodes = 4;
        int port = 0;
        boolean ha = false;
        String bind = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--dir": dir = args[++i]; break;
                case "--conf": confDir = args[++i]; break;
                case "--datanodes": dataNodes = Integer.parseInt(args[++i]); break;
                case "--port": port = Integer.parseInt(args[++i]); break;
                case "--ha": ha = true; break;
                case "--bind": bind = args[++i]; break;
                default:
                    System.err.println("hlfs-minidfs: unknown argument " + args[i]);
                    System.exit(2);
            }
        }
        if (dir == null || confDir == null) {
            System.err.println("usage: hlfs.MiniCluster --dir DIR --conf CONF_DIR [--datanodes N] [--ha] [--port P] [--bind ADDR]");
            System.exit(2);
        }
        if (bind != null && ha) {
            System.err.println("hlfs-minidfs: --bind is not supported with --ha");
            System.exit(2);
        }
        // Answers go to the real stdout; Hadoop's own chatter to stderr.
        PrintStream out = new PrintStream(new FileOutputStream(java.io.FileDescriptor.out), true,
                StandardCharsets.UTF_8);
        System.setOut(System.err);

        Configuration conf = new HdfsConfiguration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, new File(dir).getAbsolutePath());
        // Notice a stopped DataNode within seconds, not ten minutes.
        conf.setInt("dfs.heartbeat.interval", 1);
        conf.setInt("dfs.namenode.heartbeat.recheck-interval", 3000);
        conf.setInt("dfs.namenode.safemode.extension", 0);
        conf.setBoolean("dfs.permissions.enabled", false);
        conf.setBoolean("dfs.webhdfs.enabled", false);
        // Java clients (and hdfs-native, which reads the same keys) keep
        // writing when a DataNode of the pipeline goes and no spare is left.
        conf.setBoolean("dfs.client.block.write.replace-datanode-on-failure.best-effort", true);

        MiniDFSCluster.Builder b = new MiniDFSCluster.Builder(conf)
                .numDataNodes(dataNodes)
                .format(true);
        if (bind != null) {
            // MiniDFSCluster sets dfs.namenode.rpc-address to 127.0.0.1:PORT
            // whatever we say; the bind host makes the client RPC server
            // listen on ADDR:PORT instead. MiniDFSCluster's own client
            // (waitActive) and the DataNodes use the service RPC address,
            // put on ADDR too: a DataNode connecting to ADDR registers with
            // ADDR, which the NameNode then hands to clients.
            conf.set("dfs.namenode.rpc-bind-host", bind);
            conf.set("dfs.namenode.servicerpc-address", bind + ":0");
            // The DataNodes' data transfer, IPC and HTTP servers, and the
            // name they give themselves (MiniDFSCluster's 127.0.0.1
            // otherwise), so that clients and other DataNodes (pipelines)
            // reach them by address or by name.
            conf.set("dfs.datanode.address", bind + ":0");
            conf.set("dfs.datanode.ipc.address", bind + ":0");
            conf.set("dfs.datanode.http.address", bind + ":0");
            conf.set("dfs.datanode.hostname", bind);
            b.checkDataNodeAddrConfig(true).checkDataNodeHostConfig(true);
        }
        if (ha) {
            int base = port != 0 ? port : 10000 + (int) (ProcessHandle.current().pid() % 20000);
            b.nnTopology(MiniDFSNNTopology.simpleHATopology(2, base));
        } else if (port != 0) {
            b.nameNodePort(port);
        }
        MiniDFSCluster cluster = b.build();
        cluster.waitActive();
        MiniCluster mc = new MiniCluster(cluster, ha);
        mc.recordPorts();
        String uri;
        if (ha) {
            cluster.transitionToActive(0);
            String ns = "minidfs-ns";
            conf.set("dfs.client.failover.proxy.provider." + ns,
                    "org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider");
            uri = "hdfs://" + ns;
        } else if (bind != null) {
            uri = "hdfs://" + bind + ":" + cluster.getNameNodePort();
        } else {
            uri = "hdfs://127.0.0.1:" + cluster.getNameNodePort();
        }
        conf.set("fs.defaultFS", uri);
        cluster.waitActive();
        Configuration clientConf = conf;
        if (bind != null) {
            clientConf = new Configuration(conf);
            clientConf.set("dfs.namenode.rpc-address", bind + ":" + cluster.getNameNodePort());
            mc.boundFs = (DistributedFileSystem) FileSystem.newInstance(URI.create(uri), clientConf);
            // What the NameNode hands to clients: every DataNode at ADDR.
            DatanodeInfo[] live = mc.boundFs.getDataNodeStats();
            if (live.length != dataNodes) {
                throw new IllegalStateException(live.length + " DataNodes registered, not " + dataNodes);
            }
            for (DatanodeInfo dn : live) {
                if (!dn.getIpAddr().equals(bind) || !dn.getHostName().equals(bind)) {
                    throw new IllegalStateException("DataNode " + dn.getXferAddr() + " registered as "
                            + dn.getHostName() + "/" + dn.getIpAddr() + ", not " + bind);
                }
            }
        }
        writeConf(clientConf, new File(confDir));
        out.println("READY " + uri);

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            line = line.trim();
            if (line.isEmpty()) {
                continue;
            }
            if (line.equals("shutdown")) {
                break;
            }
            try {
                out.println("ok " + mc.run(line.split("\\s+")));
            } catch (Exception e) {
                out.println("error " + line + ": " + e.toString().replace('\n', ' '));
            }
        }
        cluster.shutdown(true);
        out.println("ok shutdown");
    }

    private static void writeConf(Configuration conf, File dir) throws Exception {
        dir.mkdirs();
        for (String name : new String[] {"core-site.xml", "hdfs-site.xml"}) {
            File tmp = new File(dir, name + ".tmp");
            try (OutputStream os = new FileOutputStream(tmp)) {
                conf.writeXml(os);
            }
            if (!tmp.renameTo(new File(dir, name))) {
                throw new Exception("cannot write " + new File(dir, name));
            }
        }
    }

    private int nameNode(String[] cmd) {
        int i = cmd.length > 1 ? Integer.parseInt(cmd[1]) : active;
        if (i < 0 || i >= nameNodeDown.length) {
            throw new IllegalArgumentException("no NameNode " + i);
        }
        return i;
    }

    private int dataNode(String[] cmd) {
        if (cmd.length < 2) {
            throw new IllegalArgumentException("which DataNode?");
        }
        return Integer.parseInt(cmd[1]);
    }

    private String run(String[] cmd) throws Exception {
        switch (cmd[0]) {
            case "stop-datanode": {
                int n = dataNode(cmd);
                if (stoppedDataNodes.containsKey(n)) {
                    return "datanode " + n + " already stopped";
                }
                // Indexes shift as DataNodes stop: find it by its name.
                String name = cluster.getDataNodes().stream()
                        .filter(d -> d.getDatanodeId().getXferPort() == xferPort(n))
                        .findFirst().orElseThrow(() -> new IllegalArgumentException("no DataNode " + n))
                        .getDatanodeId().getXferAddr();
                stoppedDataNodes.put(n, cluster.stopDataNode(name));
                return "stopped datanode " + n;
            }
            case "start-datanode": {
                int n = dataNode(cmd);
                DataNodeProperties p = stoppedDataNodes.remove(n);
                if (p == null) {
                    throw new IllegalArgumentException("DataNode " + n + " is not stopped");
                }
                cluster.restartDataNode(p, true);
                cluster.waitActive();
                return "started datanode " + n;
            }
            case "stop-namenode": {
                int i = nameNode(cmd);
                cluster.shutdownNameNode(i);
                nameNodeDown[i] = true;
                return "stopped namenode " + i;
            }
            case "start-namenode": {
                int i = nameNode(cmd);
                cluster.restartNameNode(i, false);
                nameNodeDown[i] = false;
                if (ha && i == active) {
                    cluster.transitionToActive(i);
                }
                cluster.waitActive(i);
                return "started namenode " + i;
            }
            case "failover": {
                if (!ha) {
                    throw new IllegalArgumentException("failover needs --ha");
                }
                int next = 1 - active;
                if (!nameNodeDown[active]) {
                    cluster.transitionToStandby(active);
                }
                cluster.transitionToActive(next);
                active = next;
                return "active namenode " + active;
            }
            case "quota": {
                if (cmd.length != 3) {
                    throw new IllegalArgumentException("quota PATH BYTES|none");
                }
                long bytes = cmd[2].equals("none") ? HdfsConstants.QUOTA_RESET : Long.parseLong(cmd[2]);
                DistributedFileSystem fs = boundFs != null ? boundFs : cluster.getFileSystem(active);
                Path p = new Path(cmd[1]);
                fs.mkdirs(p);
                fs.setQuota(p, HdfsConstants.QUOTA_DONT_SET, bytes);
                return "quota " + cmd[1] + " " + cmd[2];
            }
            case "status": {
                return "active=" + active + " namenodes=" + nameNodeDown.length
                        + " datanodes=" + (cluster.getDataNodes().size() + stoppedDataNodes.size())
                        + " up=" + cluster.getDataNodes().size();
            }
            default:
                throw new IllegalArgumentException("unknown command " + cmd[0]);
        }
    }

    /** DataNode n's transfer port, as it was at start (ports survive restarts). */
    private final Map<Integer, Integer> ports = new HashMap<>();

    private int xferPort(int n) {
        if (ports.isEmpty()) {
            throw new IllegalStateException("ports not recorded");
        }
        Integer p = ports.get(n);
        if (p == null) {
            throw new IllegalArgumentException("no DataNode " + n);
        }
        return p;
    }

    /** Records each DataNode's transfer port by its index at start. */
    void recordPorts() {
        for (int i = 0; i < cluster.getDataNodes().size(); i++) {
            ports.put(i, cluster.getDataNodes().get(i).getDatanodeId().getXferPort());
        }
    }
}
