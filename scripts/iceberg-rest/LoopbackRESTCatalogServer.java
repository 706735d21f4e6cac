/*
 * Apache Iceberg's REST catalog test server (RESTCatalogServer, iceberg-open-api test fixtures), bound to
 * 127.0.0.1 only: its own main() listens on every interface. Compiled once by tests/infra/iceberg_rest.py into
 * the jar cache.
 *
 * It lives in the server's package because the backend catalog and its context are package-private there; the
 * backend is built by RESTCatalogServer itself (CATALOG_* environment variables: CATALOG_WAREHOUSE -> warehouse,
 * CATALOG_S3_ENDPOINT -> s3.endpoint, CATALOG_IO__IMPL -> io-impl, ...), so only the HTTP listener differs.
 * Arguments: the port. Prints "READY <uri>" once it serves requests.
 */
package org.apache.iceberg.rest;

import java.lang.reflect.Method;
import org.eclipse.jetty.compression.gzip.GzipCompression;
import org.eclipse.jetty.compression.server.CompressionHandler;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

public final class LoopbackRESTCatalogServer {
  private LoopbackRESTCatalogServer() {}

  public static void main(String[] args) throws Exception {
    int port = Integer.parseInt(args[0]);
    Method backend = RESTCatalogServer.class.getDeclaredMethod("initializeBackendCatalog");
    backend.setAccessible(true);
    RESTCatalogServer.CatalogContext context =
        (RESTCatalogServer.CatalogContext) backend.invoke(new RESTCatalogServer());

    ServletContextHandler servlets = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    servlets.addServlet(
        new ServletHolder(new RESTCatalogServlet(new RESTServerCatalogAdapter(context))), "/*");
    CompressionHandler compression = new CompressionHandler();
    compression.putCompression(new GzipCompression());
    servlets.insertHandler(compression);

    Server server = new Server();
    ServerConnector connector = new ServerConnector(server);
    connector.setHost("127.0.0.1");
    connector.setPort(port);
    server.addConnector(connector);
    server.setHandler(servlets);
    server.setStopAtShutdown(true);
    server.start();
    System.out.println("READY http://127.0.0.1:" + connector.getLocalPort());
    System.out.flush();
    server.join();
  }
}
