# Charts of a bench/run.sh run: gnuplot -e "dir='bench/results'" bench/charts.gp
if (!exists("dir")) dir = "bench/results"
set terminal pngcairo size 900,480 font "DejaVu Sans,10"
set grid
set key top left

set output dir."/latency.png"
set title "txbox-relay -> Kafka: commit to broker confirmation (4 writers, single-row transactions, relay defaults)"
set xlabel "writer rate (messages/s)"
set ylabel "milliseconds"
set logscale xy
set xrange [50:10000]
plot dir."/latency.dat" using 1:2 with linespoints lw 2 pt 7 title "p50", \
     "" using 1:3 with linespoints lw 2 pt 5 title "p90", \
     "" using 1:4 with linespoints lw 2 pt 9 title "p99", \
     "" using 1:5 with linespoints lw 1 dt 2 pt 1 title "max"

set output dir."/throughput.png"
unset logscale
set xrange [*:*]
set title "txbox-relay throughput, 200,000 messages of 200 B over 1,000 keys, beside its reference in the same run"
set xlabel ""
set ylabel "messages/s"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set yrange [0:*]
set key outside bottom center horizontal
plot dir."/throughput.dat" using 2:xtic(1) title "relay", \
     "" using 3 title "reference: the raw SQL limit (null, kafka, redis); the adapter alone (amqp, nats)"

# The consumer (txbox-bench consumer), when the run measured it.
if (system("test -s '".dir."/consumer.dat' && echo yes") eq "yes") {
  set output dir."/consumer.png"
  set title "txbox consumer: messages/s per broker beside the adapter alone (same run; log scale)"
  set logscale y
  set yrange [1000:*]
  set datafile missing "?"
  set key autotitle columnheader
  plot dir."/consumer.dat" using 2:xtic(1), "" using 3, "" using 4, "" using 5, "" using 6
}
