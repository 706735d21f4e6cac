#!/bin/sh
# One KRaft node (broker + controller). The listeners come from the environment, so one image serves the
# in-cluster name and the host's loopback port:
#   KAFKA_LISTENERS             e.g. INTERNAL://10.244.0.1:9092,EXTERNAL://127.0.0.1:19092
#   KAFKA_ADVERTISED_LISTENERS  e.g. INTERNAL://redpanda.redpanda.svc.cluster.local:9092,EXTERNAL://127.0.0.1:19092
#   KAFKA_CONTROLLER            host:port of the controller listener (default 127.0.0.1:19093)
#   KAFKA_HEAP                  JVM heap (default 512m)
set -eu
data=/var/lib/kafka/data
controller="${KAFKA_CONTROLLER:-127.0.0.1:19093}"
cat > /var/lib/kafka/server.properties <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@${controller}
listeners=${KAFKA_LISTENERS},CONTROLLER://${controller}
advertised.listeners=${KAFKA_ADVERTISED_LISTENERS}
controller.listener.names=CONTROLLER
inter.broker.listener.name=${KAFKA_INTER_BROKER_LISTENER:-INTERNAL}
listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=${data}
num.partitions=${KAFKA_NUM_PARTITIONS:-3}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=${KAFKA_AUTO_CREATE_TOPICS:-true}
message.max.bytes=8388608
PROPS
java_opts="-Xms${KAFKA_HEAP:-512m} -Xmx${KAFKA_HEAP:-512m} -XX:+UseG1GC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true"
if [ ! -f "$data/meta.properties" ]; then
  # shellcheck disable=SC2086
  java $java_opts -cp "/opt/kafka/libs/*" kafka.tools.StorageTool format --ignore-formatted \
    -t "${KAFKA_CLUSTER_ID:-MkU3OEVBNTcwNTJENDM2Qk}" -c /var/lib/kafka/server.properties
fi
# shellcheck disable=SC2086
exec java $java_opts -cp '/opt/kafka/libs/*' kafka.Kafka /var/lib/kafka/server.properties
